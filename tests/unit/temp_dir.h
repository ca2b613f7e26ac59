// A directory of the unit tests' own under /tmp, removed with everything in it when the object
// goes: for files the code under test reads (a copied /proc, a token, a configuration).
#pragma once

#include <stdlib.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

namespace netmon::test {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/netmon-unit-test-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    if (made != nullptr) path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

  // Writes `text` to `name` (below the directory, which it creates) and returns its path.
  std::string file(const std::string& name, const std::string& text) const {
    const std::filesystem::path p = std::filesystem::path(path_) / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

  // Makes the FIFO `name` (a file the code under test must refuse, never block on).
  std::string fifo(const std::string& name) const {
    const std::string p = path_ + "/" + name;
    EXPECT_EQ(::mkfifo(p.c_str(), 0600), 0) << p;
    return p;
  }

 private:
  std::string path_;
};

}  // namespace netmon::test
