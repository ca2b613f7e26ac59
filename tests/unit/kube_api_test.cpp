// The API server client's pure parts: in-cluster configuration, URLs and request paths, watch
// lines and Status objects, the line splitter's bounds, and the backoff's bounds. The network
// side (list, watch, 410, backoff, token rotation, stop) is tests/integration/test_kube_api.py.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "k8s/in_cluster.h"
#include "k8s/kube_api.h"
#include "k8s/list_watch.h"
#include "k8s/watch_stream.h"
#include "temp_dir.h"

namespace netmon {
namespace {

InClusterEnvironment env_of(std::map<std::string, std::string> vars, std::string dir = "/sa") {
  InClusterEnvironment env;
  env.kubernetes_service_host = vars["KUBERNETES_SERVICE_HOST"];
  env.kubernetes_service_port = vars["KUBERNETES_SERVICE_PORT"];
  env.service_account_dir = std::move(dir);
  return env;
}

TEST(InClusterKubeApi, FillsUrlTokenAndCaFromTheEnvironment) {
  auto options = in_cluster_kube_api(
      env_of({{"KUBERNETES_SERVICE_HOST", "10.96.0.1"}, {"KUBERNETES_SERVICE_PORT", "443"}},
             "/var/run/secrets/kubernetes.io/serviceaccount/"));
  ASSERT_TRUE(options) << options.error().message;
  EXPECT_EQ(options->url, "https://10.96.0.1:443");
  EXPECT_EQ(options->token_file, "/var/run/secrets/kubernetes.io/serviceaccount/token");
  EXPECT_EQ(options->ca_file, "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt");
  EXPECT_FALSE(options->insecure_skip_verify);
}

TEST(InClusterKubeApi, BracketsAnIpv6Host) {
  auto options = in_cluster_kube_api(
      env_of({{"KUBERNETES_SERVICE_HOST", "fd00:10:96::1"}, {"KUBERNETES_SERVICE_PORT", "6443"}}));
  ASSERT_TRUE(options) << options.error().message;
  EXPECT_EQ(options->url, "https://[fd00:10:96::1]:6443");
  EXPECT_TRUE(parse_kube_api_url(options->url));
  auto bracketed = in_cluster_kube_api(
      env_of({{"KUBERNETES_SERVICE_HOST", "[fd00::1]"}, {"KUBERNETES_SERVICE_PORT", "443"}}));
  ASSERT_TRUE(bracketed);
  EXPECT_EQ(bracketed->url, "https://[fd00::1]:443");
}

TEST(InClusterKubeApi, FailsOutsideAClusterOrWithMalformedValues) {
  auto none = in_cluster_kube_api(env_of({}));
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("KUBERNETES_SERVICE_HOST is not set"), std::string::npos);
  EXPECT_FALSE(in_cluster_kube_api(env_of({{"KUBERNETES_SERVICE_HOST", "10.0.0.1"}})));
  EXPECT_FALSE(in_cluster_kube_api(
      env_of({{"KUBERNETES_SERVICE_HOST", "10.0.0.1"}, {"KUBERNETES_SERVICE_PORT", "0"}})));
  EXPECT_FALSE(in_cluster_kube_api(
      env_of({{"KUBERNETES_SERVICE_HOST", "10.0.0.1"}, {"KUBERNETES_SERVICE_PORT", "44x"}})));
  auto evil = in_cluster_kube_api(
      env_of({{"KUBERNETES_SERVICE_HOST", "a.b/evil?x"}, {"KUBERNETES_SERVICE_PORT", "443"}}));
  ASSERT_FALSE(evil);
  auto newline = in_cluster_kube_api(
      env_of({{"KUBERNETES_SERVICE_HOST", "a\r\nb"}, {"KUBERNETES_SERVICE_PORT", "443"}}));
  ASSERT_FALSE(newline);
  EXPECT_EQ(newline.error().message.find('\n'), std::string::npos);
}

TEST(KubeApiUrl, AcceptsHostPortFormsAndRefusesPaths) {
  auto v4 = parse_kube_api_url("https://10.0.0.1:6443");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->scheme_host_port, "https://10.0.0.1:6443");
  EXPECT_TRUE(v4->https);
  auto slash = parse_kube_api_url("http://api.example:8080/");
  ASSERT_TRUE(slash);
  EXPECT_EQ(slash->scheme_host_port, "http://api.example:8080");
  EXPECT_FALSE(slash->https);
  auto v6 = parse_kube_api_url("https://[::1]:443");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->scheme_host_port, "https://[::1]:443");
  EXPECT_TRUE(parse_kube_api_url("https://kubernetes.default.svc"));
  EXPECT_FALSE(parse_kube_api_url("https://10.0.0.1:6443/api"));
  EXPECT_FALSE(parse_kube_api_url("ftp://10.0.0.1"));
  EXPECT_FALSE(parse_kube_api_url("10.0.0.1:443"));
  EXPECT_FALSE(parse_kube_api_url("https://::1:443"));
  EXPECT_FALSE(parse_kube_api_url("https://[::1:443"));
  EXPECT_FALSE(parse_kube_api_url("https://host:99999"));
  EXPECT_FALSE(parse_kube_api_url("https://"));
}

TEST(KubeApiValidate, RefusesATokenOverPlainHttpAndUnusableFiles) {
  test::TempDir dir;
  KubeApiOptions options;
  options.url = "http://127.0.0.1:8080";
  options.token_file = dir.file("token", "abc\n");
  EXPECT_FALSE(KubeApiClient::validate(options));
  options.allow_http_token = true;
  EXPECT_TRUE(KubeApiClient::validate(options));
  options.url = "https://127.0.0.1:6443";
  options.token_file = dir.file("bad-token", "abc\r\nX-Evil: 1\n");
  auto bad = KubeApiClient::validate(options);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message.find("X-Evil"), std::string::npos);  // never echoes the token
  options.token_file = dir.path() + "/not-yet";                      // may appear later
  EXPECT_TRUE(KubeApiClient::validate(options));
  options.ca_file = dir.fifo("ca-fifo");
  EXPECT_FALSE(KubeApiClient::validate(options));
}

TEST(KubeApiQuery, EncodesValuesAndAppendsToAnExistingQuery) {
  EXPECT_EQ(url_encode("abc-._~XYZ09"), "abc-._~XYZ09");
  EXPECT_EQ(url_encode("a b/c=d&e+f"), "a%20b%2Fc%3Dd%26e%2Bf");
  EXPECT_EQ(with_query("/api/v1/nodes", "limit", "500"), "/api/v1/nodes?limit=500");
  EXPECT_EQ(with_query("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", "limit", "5"),
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=5");
}

TEST(KubeApiQuery, ListAndWatchPaths) {
  EXPECT_EQ(list_request_path("/api/v1/services", 500, "", ""), "/api/v1/services?limit=500");
  EXPECT_EQ(list_request_path("/api/v1/services", 500, "0", ""),
            "/api/v1/services?limit=500&resourceVersion=0");
  // A continue token is opaque base64 (with '=' and '+'): percent-encoded; the server refuses
  // it together with a resourceVersion.
  EXPECT_EQ(list_request_path("/api/v1/services", 2, "0", "eyJ2Ijo+In0="),
            "/api/v1/services?limit=2&continue=eyJ2Ijo%2BIn0%3D");
  EXPECT_EQ(watch_request_path("/apis/discovery.k8s.io/v1/endpointslices", "1177", 300),
            "/apis/discovery.k8s.io/v1/endpointslices?watch=1&resourceVersion=1177"
            "&allowWatchBookmarks=true&timeoutSeconds=300");
  EXPECT_EQ(watch_request_path("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", "7", 60),
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&watch=1&resourceVersion=7"
            "&allowWatchBookmarks=true&timeoutSeconds=60");
}

TEST(WatchEvent, ParsesTheEventTypesWithTheirResourceVersion) {
  auto added = parse_watch_event(
      R"({"type":"ADDED","object":{"kind":"Service","apiVersion":"v1",)"
      R"("metadata":{"name":"kube-dns","namespace":"kube-system","resourceVersion":"177"}}})");
  ASSERT_TRUE(added) << added.error().message;
  EXPECT_EQ(added->type, WatchEventType::kAdded);
  EXPECT_EQ(added->resource_version, "177");
  EXPECT_EQ(added->object["metadata"]["name"], "kube-dns");
  for (const auto& [name, type] : std::vector<std::pair<std::string, WatchEventType>>{
           {"MODIFIED", WatchEventType::kModified},
           {"DELETED", WatchEventType::kDeleted},
           {"BOOKMARK", WatchEventType::kBookmark}}) {
    auto event = parse_watch_event(R"({"type":")" + name +
                                   R"(","object":{"metadata":{"resourceVersion":"9"}}})");
    ASSERT_TRUE(event) << name;
    EXPECT_EQ(event->type, type);
    EXPECT_EQ(watch_event_type_name(type), name);
    EXPECT_EQ(event->resource_version, "9");
  }
}

TEST(WatchEvent, AnErrorEventCarriesAStatus) {
  // As a real API server sends it for a watch from a compacted resourceVersion.
  auto event = parse_watch_event(
      R"j({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},)j"
      R"j("status":"Failure","message":"too old resource version: 657887 (680402)",)j"
      R"j("reason":"Expired","code":410}})j");
  ASSERT_TRUE(event) << event.error().message;
  EXPECT_EQ(event->type, WatchEventType::kError);
  auto status = parse_api_status(event->object);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->code, 410);
  EXPECT_EQ(status->reason, "Expired");
  EXPECT_EQ(status->message, "too old resource version: 657887 (680402)");
  EXPECT_FALSE(parse_api_status(nlohmann::json::object({{"kind", "Service"}})));
  EXPECT_FALSE(parse_api_status_text("403 Forbidden"));
}

TEST(WatchEvent, RefusesWhatIsNotAWatchEvent) {
  EXPECT_FALSE(parse_watch_event("not json"));
  EXPECT_FALSE(parse_watch_event(R"(["ADDED"])"));
  EXPECT_FALSE(parse_watch_event(R"({"object":{"metadata":{"resourceVersion":"1"}}})"));
  EXPECT_FALSE(parse_watch_event(R"({"type":"SYNC","object":{"metadata":{}}})"));
  EXPECT_FALSE(parse_watch_event(R"({"type":"ADDED","object":"x"})"));
  EXPECT_FALSE(parse_watch_event(R"({"type":"ADDED","object":{"metadata":{}}})"));
  EXPECT_FALSE(
      parse_watch_event(R"({"type":"ADDED","object":{"metadata":{"resourceVersion":5}}})"));
  EXPECT_FALSE(
      parse_watch_event(R"({"type":"ADDED","object":{"metadata":{"resourceVersion":"1"}})"));
  // The message quotes at most the start of a long line, escaped.
  const std::string long_line = "\x01" + std::string(10000, 'x');
  auto bad = parse_watch_event(long_line);
  ASSERT_FALSE(bad);
  EXPECT_LT(bad.error().message.size(), 200u);
  EXPECT_EQ(bad.error().message.find('\x01'), std::string::npos);
}

TEST(LineSplitter, JoinsLinesAcrossChunksAndSkipsEmptyOnes) {
  LineSplitter splitter(64);
  std::vector<std::string> lines;
  auto collect = [&](std::string_view line) {
    lines.emplace_back(line);
    return true;
  };
  EXPECT_EQ(splitter.feed("{\"a\":1}\n{\"b\"", collect), LineSplitter::Feed::kMore);
  EXPECT_EQ(splitter.feed(":2}\r\n\n{\"c\"", collect), LineSplitter::Feed::kMore);
  EXPECT_EQ(splitter.feed(":3}", collect), LineSplitter::Feed::kMore);
  EXPECT_EQ(splitter.finish(collect), LineSplitter::Feed::kMore);
  EXPECT_EQ(lines, (std::vector<std::string>{"{\"a\":1}", "{\"b\":2}", "{\"c\":3}"}));
}

TEST(LineSplitter, StopsWhenTheCallbackSaysSo) {
  LineSplitter splitter(64);
  int seen = 0;
  EXPECT_EQ(splitter.feed("a\nb\nc\n", [&](std::string_view) { return ++seen < 2; }),
            LineSplitter::Feed::kStopped);
  EXPECT_EQ(seen, 2);
}

TEST(LineSplitter, ALineOverTheCapIsRefusedWithoutHoldingIt) {
  LineSplitter splitter(10);
  auto ignore = [](std::string_view) { return true; };
  EXPECT_EQ(splitter.feed("0123456789\n", ignore), LineSplitter::Feed::kMore);  // exactly 10
  EXPECT_EQ(splitter.feed("01234", ignore), LineSplitter::Feed::kMore);
  EXPECT_EQ(splitter.feed("567890", ignore), LineSplitter::Feed::kTooLong);
  EXPECT_EQ(splitter.pending_bytes(), 0u);
  LineSplitter one_chunk(10);
  EXPECT_EQ(one_chunk.feed(std::string(1000, 'x'), ignore), LineSplitter::Feed::kTooLong);
  EXPECT_EQ(one_chunk.pending_bytes(), 0u);
}

TEST(Backoff, DoublesItsCeilingBetweenMinAndMax) {
  const BackoffPolicy policy{std::chrono::milliseconds(1000), std::chrono::milliseconds(60000)};
  EXPECT_EQ(backoff_delay(policy, 1, 0.0).count(), 1000);
  EXPECT_EQ(backoff_delay(policy, 1, 0.999).count(), 1000);
  EXPECT_EQ(backoff_delay(policy, 2, 0.0).count(), 1000);
  EXPECT_EQ(backoff_delay(policy, 2, 0.5).count(), 1500);
  EXPECT_EQ(backoff_delay(policy, 3, 0.75).count(), 3250);
  EXPECT_EQ(backoff_delay(policy, 7, 1.0).count(), 60000);  // 64 s ceiling capped
  EXPECT_EQ(backoff_delay(policy, 1000000, 0.9999).count(), 59994);
}

TEST(WatchTimeout, SpreadsBetweenBaseAndTwiceBase) {
  EXPECT_EQ(watch_timeout_seconds(300, 0.0), 300u);
  EXPECT_EQ(watch_timeout_seconds(300, 0.5), 450u);
  EXPECT_EQ(watch_timeout_seconds(300, 0.99999), 599u);
  EXPECT_EQ(watch_timeout_seconds(300, 1.0), 599u);
  EXPECT_EQ(watch_timeout_seconds(300, std::nan("")), 300u);
  EXPECT_EQ(watch_timeout_seconds(1, 0.9), 1u);
  EXPECT_EQ(watch_timeout_seconds(0xffffffffu, 0.9), 0xffffffffu);
}

TEST(Backoff, StaysWithinTheBoundsWhateverTheDraw) {
  const BackoffPolicy policy{std::chrono::milliseconds(1000), std::chrono::milliseconds(60000)};
  std::set<int64_t> distinct;
  for (uint32_t failures : {1u, 2u, 5u, 10u, 100u, 0xffffffffu}) {
    for (double unit : {-1.0, 0.0, 0.25, 0.5, 0.75, 0.999999, 1.0, 2.0, std::nan("")}) {
      const auto d = backoff_delay(policy, failures, unit).count();
      EXPECT_GE(d, 1000) << failures << " " << unit;
      EXPECT_LE(d, 60000) << failures << " " << unit;
      distinct.insert(d);
    }
  }
  EXPECT_GT(distinct.size(), 10u);  // jitter spreads the retries
  // A zero or inverted policy still waits (never a busy loop).
  EXPECT_GE(
      backoff_delay({std::chrono::milliseconds(0), std::chrono::milliseconds(0)}, 3, 0.5).count(),
      1);
}

TEST(KubeApiErrors, NamesAreDistinctMetricLabels) {
  std::set<std::string> names;
  for (size_t i = 0; i < static_cast<size_t>(KubeApiError::kCount); ++i) {
    const std::string name(kube_api_error_name(static_cast<KubeApiError>(i)));
    EXPECT_NE(name, "unknown");
    EXPECT_TRUE(names.insert(name).second) << name;
  }
  EXPECT_EQ(kube_api_error_of_status(200), KubeApiError::kNone);
  EXPECT_EQ(kube_api_error_of_status(401), KubeApiError::kUnauthorized);
  EXPECT_EQ(kube_api_error_of_status(403), KubeApiError::kForbidden);
  EXPECT_EQ(kube_api_error_of_status(410), KubeApiError::kGone);
  EXPECT_EQ(kube_api_error_of_status(429), KubeApiError::kHttp4xx);
  EXPECT_EQ(kube_api_error_of_status(503), KubeApiError::kHttp5xx);
  EXPECT_EQ(kube_api_error_of_status(302), KubeApiError::kHttpOther);
}

ListWatchOptions resource(std::string path) {
  ListWatchOptions options;
  options.resource = std::move(path);
  return options;
}

class NullHandler : public ListWatchHandler {
 public:
  void on_list(const nlohmann::json&, const std::string&) override {}
  void on_event(WatchEventType, const nlohmann::json&) override {}
};

TEST(ListWatcher, RefusesBadResourcePathsAndStopsWithoutStarting) {
  NullHandler handler;
  KubeApiOptions api;
  api.url = "https://127.0.0.1:1";
  EXPECT_FALSE(ListWatcher::create(api, resource("api/v1/nodes"), handler));
  EXPECT_FALSE(ListWatcher::create(api, resource("/api/v1/pods?x=a b"), handler));
  EXPECT_FALSE(ListWatcher::create(api, resource("/api/v1/pods\r\nX: y"), handler));
  auto watcher =
      ListWatcher::create(api, resource("/apis/discovery.k8s.io/v1/endpointslices"), handler);
  ASSERT_TRUE(watcher) << watcher.error().message;
  EXPECT_EQ((*watcher)->name(), "endpointslices");
  (*watcher)->stop();
  (*watcher)->stop();
  EXPECT_FALSE((*watcher)->synced());
}

}  // namespace
}  // namespace netmon
