// The agent's signal handlers: what each signal leaves for the run loop. The handlers this test
// replaces are put back afterwards (a stop signal's flag stays set: nothing else here reads it).
#include "app/signals.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <map>

namespace netmon {
namespace {

class SignalsTest : public ::testing::Test {
 protected:
  static constexpr int kSignals[] = {SIGTERM,   SIGINT,  SIGHUP, SIGUSR1, SIGUSR2, SIGALRM,
                                     SIGVTALRM, SIGPROF, SIGIO,  SIGPWR,  SIGPIPE};

  void SetUp() override {
    for (const int sig : kSignals) sigaction(sig, nullptr, &saved_[sig]);
    install_signal_handlers();
  }
  void TearDown() override {
    for (const auto& [sig, action] : saved_) sigaction(sig, &action, nullptr);
  }

  std::map<int, struct sigaction> saved_;
};

TEST_F(SignalsTest, StatusAndIgnoredSignalsAreTakenOnce) {
  (void)take_status_request();
  (void)take_ignored_signal();
  ASSERT_EQ(raise(SIGUSR1), 0);
  EXPECT_TRUE(take_status_request());
  EXPECT_FALSE(take_status_request());
  ASSERT_EQ(raise(SIGUSR2), 0);
  ASSERT_EQ(raise(SIGPWR), 0);
  EXPECT_EQ(take_ignored_signal(), SIGPWR);  // the last one
  EXPECT_EQ(take_ignored_signal(), 0);
  ASSERT_EQ(raise(SIGPIPE), 0);  // ignored without a trace
  EXPECT_EQ(take_ignored_signal(), 0);
}

TEST_F(SignalsTest, AStopSignalSetsTheFlagAndNamesItself) {
  ASSERT_EQ(raise(SIGHUP), 0);
  EXPECT_TRUE(stop_flag().load());
  EXPECT_EQ(stop_signal(), SIGHUP);
}

TEST(SignalNameTest, NamesTheSignalsTheAgentLogs) {
  EXPECT_EQ(signal_name(SIGTERM), "SIGTERM");
  EXPECT_EQ(signal_name(SIGINT), "SIGINT");
  EXPECT_EQ(signal_name(SIGUSR2), "SIGUSR2");
  EXPECT_EQ(signal_name(SIGPWR), "SIGPWR");
  EXPECT_EQ(signal_name(SIGKILL), "signal 9");
}

}  // namespace
}  // namespace netmon
