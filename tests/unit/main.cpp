// The unit tests' main: GoogleTest's, plus one rule. Under CI=true (or CI=1) a skipped test is a
// failure: CI has every fixture (../shared/fixtures), IPv6 loopback and cgroup v2, so a skip there
// means a test did not run. Locally a skip stays a skip, with its reason printed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

namespace {

bool in_ci() {
  const char* ci = std::getenv("CI");
  if (!ci) return false;
  const std::string_view value(ci);
  return value == "true" || value == "TRUE" || value == "True" || value == "1";
}

class SkipRecorder : public testing::EmptyTestEventListener {
 public:
  void OnTestEnd(const testing::TestInfo& info) override {
    if (info.result()->Skipped()) {
      skipped.push_back(std::string(info.test_suite_name()) + "." + info.name());
    }
  }
  std::vector<std::string> skipped;
};

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  auto* recorder = new SkipRecorder;  // owned by GoogleTest's listener list
  testing::UnitTest::GetInstance()->listeners().Append(recorder);
  const int result = RUN_ALL_TESTS();
  if (!in_ci() || recorder->skipped.empty()) return result;
  std::cerr << "CI=true, and " << recorder->skipped.size()
            << " test(s) were skipped; under CI a skip is a failure:\n";
  for (const std::string& name : recorder->skipped) std::cerr << "  " << name << "\n";
  return 1;
}
