// Unit tests for the kubelet URL parsing, the token and option checks, how a request to a
// hostile kubelet ends (a plain-HTTP one-shot server in a thread), the cgroup2 mount lookup and
// the cgroup id resolver.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "common/unique_fd.h"

#include "k8s/cgroup_resolver.h"
#include "k8s/kubelet.h"
#include "temp_dir.h"

namespace netmon {
namespace {

TEST(KubeletUrl, SplitsSchemeHostPortAndPath) {
  auto u = parse_kubelet_url("https://10.0.0.5:10250/pods");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_EQ(u->scheme_host_port, "https://10.0.0.5:10250");
  EXPECT_EQ(u->path, "/pods");
}

TEST(KubeletUrl, DefaultsThePathToPods) {
  auto u = parse_kubelet_url("https://node-1:10250");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->path, "/pods");
}

TEST(KubeletUrl, KeepsIpv6Literals) {
  auto u = parse_kubelet_url("https://[fd00::5]:10250/pods");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->scheme_host_port, "https://[fd00::5]:10250");
}

TEST(KubeletUrl, RejectsOtherSchemesAndMissingParts) {
  EXPECT_FALSE(parse_kubelet_url("ftp://x/pods"));
  EXPECT_FALSE(parse_kubelet_url("10.0.0.5:10250/pods"));
  EXPECT_FALSE(parse_kubelet_url("https:///pods"));
}

TEST(KubeletResultName, NamesEveryResult) {
  for (int r = 0; r < static_cast<int>(KubeletResult::kCount); ++r) {
    EXPECT_NE(kubelet_result_name(static_cast<KubeletResult>(r)), "unknown") << r;
  }
  EXPECT_EQ(kubelet_result_name(KubeletResult::kTlsError), "tls_error");
}

TEST(BearerToken, TrimsSurroundingWhitespace) {
  EXPECT_EQ(parse_bearer_token("eyJhbGciOi.x-y_z\n").value_or("?"), "eyJhbGciOi.x-y_z");
  EXPECT_EQ(parse_bearer_token(" \t tok \r\n\r\n").value_or("?"), "tok");
  EXPECT_EQ(parse_bearer_token("").value_or("?"), "");
}

TEST(BearerToken, RejectsControlCharactersWithoutEchoingTheToken) {
  // A CR/LF inside would end the Authorization header and start another.
  auto injected = parse_bearer_token("secret-token\r\nX-Injected: yes\n");
  ASSERT_FALSE(injected);
  EXPECT_EQ(injected.error().message,
            "the token holds the control character 0x0d at offset 12 (a token is one line of "
            "printable characters)");
  EXPECT_FALSE(parse_bearer_token("a\nb"));
  EXPECT_FALSE(parse_bearer_token(std::string("a\0b", 3)));
  EXPECT_FALSE(parse_bearer_token("a\x7f"));
  EXPECT_FALSE(parse_bearer_token("a\tb"));
}

using test::TempDir;

std::string validate_error(const KubeletOptions& o) {
  auto r = KubeletWatcher::validate(o);
  return r ? std::string() : r.error().message;
}

TEST(KubeletValidate, RefusesATokenOverPlainHttpUnlessAllowed) {
  TempDir dir;
  KubeletOptions o;
  o.url = "http://127.0.0.1:10255/pods";
  o.token_file = dir.file("token", "tok\n");
  EXPECT_EQ(validate_error(o),
            "the kubelet URL 'http://127.0.0.1:10255/pods' is plain HTTP and would carry the "
            "bearer token of '" +
                o.token_file +
                "' in cleartext; use https, or allow it with --kubelet-allow-http-token");
  o.allow_http_token = true;
  EXPECT_EQ(validate_error(o), "");
  o.allow_http_token = false;
  o.token_file.clear();  // no token: nothing to leak
  EXPECT_EQ(validate_error(o), "");
  o.url = "https://127.0.0.1:10250/pods";
  o.token_file = dir.file("token", "tok\n");
  EXPECT_EQ(validate_error(o), "");
}

TEST(KubeletValidate, RefusesTokenAndCaFilesThatAreNotSmallRegularFiles) {
  TempDir dir;
  KubeletOptions o;
  o.url = "https://127.0.0.1:10250/pods";
  o.token_file = dir.fifo("token-fifo");
  EXPECT_EQ(validate_error(o), "the kubelet token file (--kubelet-token-file) cannot be used: " +
                                   o.token_file + ": not a regular file (a FIFO)");
  o.token_file = "/dev/zero";
  EXPECT_EQ(validate_error(o),
            "the kubelet token file (--kubelet-token-file) cannot be used: /dev/zero: not a "
            "regular file (a character device)");
  o.token_file = dir.file("big-token", std::string(kMaxTokenFileBytes + 1, 'a'));
  EXPECT_NE(validate_error(o).find("larger than 65536 bytes"), std::string::npos);
  o.token_file = dir.file("crlf-token", "tok\r\nX-Injected: yes\n");
  EXPECT_EQ(validate_error(o), "the kubelet token file '" + o.token_file +
                                   "' cannot be used: the token holds the control character "
                                   "0x0d at offset 3 (a token is one line of printable "
                                   "characters)");
  o.token_file = dir.path() + "/not-yet";  // a token that appears later is fine
  EXPECT_EQ(validate_error(o), "");

  o.ca_file = dir.fifo("ca-fifo");
  EXPECT_EQ(validate_error(o), "the kubelet CA file (--kubelet-ca-file) cannot be used: " +
                                   o.ca_file + ": not a regular file (a FIFO)");
  o.ca_file = dir.file("big-ca", std::string(kMaxCaFileBytes + 1, 'c'));
  EXPECT_NE(validate_error(o).find("larger than 1048576 bytes"), std::string::npos);
  EXPECT_FALSE(KubeletWatcher::create(o));
}

// A plain-HTTP server on 127.0.0.1 that answers each connection with `reply` (after reading the
// request head) and closes it, in its own thread, until destroyed.
class CannedServer {
 public:
  explicit CannedServer(std::string reply) : reply_(std::move(reply)) {
    fd_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::listen(fd_.get(), 4) != 0 ||
        ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot listen";
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~CannedServer() {
    ::shutdown(fd_.get(), SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
  }
  CannedServer(const CannedServer&) = delete;
  CannedServer& operator=(const CannedServer&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/pods"; }
  size_t bytes_sent() const { return sent_.load(); }

 private:
  void serve() {
    for (;;) {
      UniqueFd conn(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) return;
      std::string head;
      char buf[4096];
      while (head.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(conn.get(), buf, sizeof(buf), 0);
        if (n <= 0) break;
        head.append(buf, static_cast<size_t>(n));
      }
      for (size_t off = 0; off < reply_.size();) {
        const ssize_t n =
            ::send(conn.get(), reply_.data() + off, reply_.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
        sent_ += static_cast<size_t>(n);
      }
    }
  }

  std::string reply_;
  UniqueFd fd_;
  int port_ = 0;
  std::atomic<size_t> sent_{0};
  std::thread thread_;
};

// Starts a watcher on `url`, waits (bounded) for its first request to end, and returns the
// result it counted.
std::optional<KubeletResult> first_result(const std::string& url, std::string* error = nullptr) {
  KubeletOptions o;
  o.url = url;
  o.poll_interval = std::chrono::seconds(3600);
  auto watcher = KubeletWatcher::create(o);
  if (!watcher) return std::nullopt;
  (*watcher)->start();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    const KubeletStats stats = (*watcher)->stats();
    for (size_t i = 0; i < stats.requests.size(); ++i) {
      if (stats.requests[i] == 0) continue;
      // last_error() is set just after the count: wait for it too.
      while (i != 0 && (*watcher)->last_error().empty() &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      if (error) *error = (*watcher)->last_error();
      return static_cast<KubeletResult>(i);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::nullopt;
}

TEST(KubeletFetch, ContentLengthOverTheCapEndsTheRequestAtTheHeaders) {
  // 100 MB announced, 1 MiB sent (the server stops when the client hangs up).
  CannedServer server(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
      "100000000\r\n\r\n" +
      std::string(1u << 20, ' '));
  std::string error;
  EXPECT_EQ(first_result(server.url(), &error), KubeletResult::kTooLarge);
  EXPECT_EQ(error, "too_large: response larger than 67108864 bytes (Content-Length 100000000)");
}

TEST(KubeletFetch, ABodyPastTheCapWithoutContentLengthIsTooLarge) {
  KubeletOptions o;
  CannedServer server(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: "
      "close\r\n\r\n" +
      std::string(o.max_response_bytes + 4096, ' '));
  std::string error;
  EXPECT_EQ(first_result(server.url(), &error), KubeletResult::kTooLarge);
  EXPECT_EQ(error, "too_large: response larger than 67108864 bytes");
}

TEST(KubeletFetch, BytesThatAreNotHttpAreABadResponse) {
  std::string noise;
  uint32_t x = 12345;
  for (int i = 0; i < 4096; ++i) {
    x = x * 1103515245u + 12345u;
    noise += static_cast<char>(x >> 24);
  }
  CannedServer server(noise);
  std::string error;
  EXPECT_EQ(first_result(server.url(), &error), KubeletResult::kBadResponse);
  EXPECT_EQ(error,
            "bad_response: no HTTP response (the reply is not HTTP, or the connection closed)");
}

TEST(KubeletFetch, LastErrorIsCappedAndEscaped) {
  // A JSON parse error quotes the kubelet's text (an unterminated string, whole): a long one is
  // cut, control characters escaped.
  CannedServer server("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n\"a\x7f" +
                      std::string(4997, 'a'));
  std::string error;
  EXPECT_EQ(first_result(server.url(), &error), KubeletResult::kBadResponse);
  EXPECT_LT(error.size(), 400u) << error;
  EXPECT_NE(error.find("a\\x7fa"), std::string::npos) << error;
}

TEST(CgroupMount, FindsTheCgroup2LineInMountinfo) {
  const std::string mountinfo =
      "25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n"
      "35 25 0:29 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n"
      "36 35 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n"
      "37 35 0:31 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd\n";
  EXPECT_EQ(find_cgroup2_mount(mountinfo), "/sys/fs/cgroup/unified");
}

TEST(CgroupMount, UnescapesSpacesAndSkipsOptionalFields) {
  const std::string mountinfo =
      "36 35 0:30 / /host/sys/fs/my\\040cgroup rw shared:10 master:3 - cgroup2 none rw\n";
  EXPECT_EQ(find_cgroup2_mount(mountinfo), "/host/sys/fs/my cgroup");
}

TEST(CgroupMount, NoneWithoutCgroup2) {
  EXPECT_EQ(find_cgroup2_mount("37 35 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            std::nullopt);
  EXPECT_EQ(find_cgroup2_mount(""), std::nullopt);
}

std::optional<std::string> host_cgroup2_mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream text;
  text << in.rdbuf();
  return find_cgroup2_mount(text.str());
}

TEST(CgroupResolver, ResolvesTheRootAndOwnCgroupById) {
  auto mount = host_cgroup2_mount();
  if (!mount) GTEST_SKIP() << "no cgroup2 hierarchy mounted";
  auto resolver = CgroupResolver::open(*mount);
  ASSERT_TRUE(resolver) << resolver.error().message;
  struct stat st {};
  ASSERT_EQ(::stat(mount->c_str(), &st), 0);
  EXPECT_EQ(resolver->path_of(st.st_ino), "/");
  // This process's own cgroup (the "0::" line of /proc/self/cgroup), by its directory's inode.
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  std::string own;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) own = line.substr(3);
  }
  if (own.empty() || own.find("..") != std::string::npos) GTEST_SKIP() << "own cgroup unknown";
  const std::string dir = *mount + (own == "/" ? "" : own);
  ASSERT_EQ(::stat(dir.c_str(), &st), 0) << dir;
  EXPECT_EQ(resolver->path_of(st.st_ino), own);
  EXPECT_FALSE(resolver->identity(st.st_ino).in_pod());
}

TEST(CgroupResolver, UnknownIdResolvesToEmptyIdentity) {
  auto mount = host_cgroup2_mount();
  if (!mount) GTEST_SKIP() << "no cgroup2 hierarchy mounted";
  auto resolver = CgroupResolver::open(*mount);
  ASSERT_TRUE(resolver);
  const CgroupIdentity& id = resolver->identity(0x7fffffffffffull);
  EXPECT_FALSE(id.in_pod());
  EXPECT_FALSE(id.in_container());
  EXPECT_EQ(resolver->stats().unresolved, 1u);
}

TEST(CgroupResolver, OpenFailsForAMissingRoot) {
  auto resolver = CgroupResolver::open("/nonexistent/cgroup");
  ASSERT_FALSE(resolver);
  EXPECT_NE(resolver.error().message.find("/nonexistent/cgroup"), std::string::npos);
}

}  // namespace
}  // namespace netmon
