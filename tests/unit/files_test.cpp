// Unit tests for common/files.h: regular files only, within a size cap, never blocking.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/files.h"
#include "temp_dir.h"

namespace netmon {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(ReadRegularFile, ReadsAWholeFile) {
  TempDir dir;
  const std::string p = dir.file("token", "abc\n");
  auto text = read_regular_file(p, 64);
  ASSERT_TRUE(text) << text.error().message;
  EXPECT_EQ(*text, "abc\n");
}

TEST(ReadRegularFile, FollowsASymlinkToARegularFile) {
  // Kubernetes' projected tokens: token -> ..data/token -> ..2026_12_06/token.
  TempDir dir;
  const std::string target = dir.file("real-token", "t0ken");
  const std::string link = dir.path() + "/token";
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  auto text = read_regular_file(link, 64);
  ASSERT_TRUE(text) << text.error().message;
  EXPECT_EQ(*text, "t0ken");
}

TEST(ReadRegularFile, AFileAtTheCapIsReadAndOneByteMoreIsRefused) {
  TempDir dir;
  EXPECT_EQ(read_regular_file(dir.file("at", std::string(100, 'x')), 100).value_or(""),
            std::string(100, 'x'));
  const std::string over = dir.file("over", std::string(101, 'x'));
  auto text = read_regular_file(over, 100);
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error().message, over + ": larger than 100 bytes");
}

TEST(ReadRegularFile, RefusesAFifoWithoutWaitingForAWriter) {
  TempDir dir;
  const std::string p = dir.fifo("fifo");
  const auto started = std::chrono::steady_clock::now();
  auto text = read_regular_file(p, 64);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(1));
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error().message, p + ": not a regular file (a FIFO)");
  EXPECT_FALSE(check_regular_file(p, 64));
  EXPECT_FALSE(read_regular_file_prefix(p, 64));
}

TEST(ReadRegularFile, RefusesDevicesAndDirectories) {
  auto zero = read_regular_file("/dev/zero", 1u << 20);
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().message, "/dev/zero: not a regular file (a character device)");
  auto dir = read_regular_file("/tmp", 64);
  ASSERT_FALSE(dir);
  EXPECT_EQ(dir.error().message, "/tmp: Is a directory");
  EXPECT_EQ(dir.error().code, EISDIR);
}

TEST(ReadRegularFile, AMissingFileNamesThePathAndErrno) {
  auto text = read_regular_file("/nonexistent/netmon-token", 64);
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error().code, ENOENT);
  EXPECT_TRUE(contains(text.error().message, "/nonexistent/netmon-token: No such file"))
      << text.error().message;
}

TEST(ReadRegularFile, ReadsProcfsFilesWhoseSizeReadsAsZero) {
  auto status = read_regular_file("/proc/self/status", 1u << 20);
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_TRUE(contains(*status, "\nPid:"));
  // Over the cap: refused whole, or (prefix) cut at the cap.
  EXPECT_FALSE(read_regular_file("/proc/self/status", 16));
  auto prefix = read_regular_file_prefix("/proc/self/status", 16);
  ASSERT_TRUE(prefix) << prefix.error().message;
  EXPECT_EQ(prefix->size(), 16u);
  EXPECT_TRUE(prefix->starts_with("Name:"));
}

TEST(CheckRegularFile, ChecksTypeAndSizeWithoutReading) {
  TempDir dir;
  EXPECT_TRUE(check_regular_file(dir.file("ca.crt", std::string(1000, 'c')), 1000));
  auto big = check_regular_file(dir.file("big.crt", std::string(1001, 'c')), 1000);
  ASSERT_FALSE(big);
  EXPECT_TRUE(contains(big.error().message, "larger than 1000 bytes"));
  EXPECT_FALSE(check_regular_file("/dev/zero", 1000));
}

}  // namespace
}  // namespace netmon
