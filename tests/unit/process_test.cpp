#include <gtest/gtest.h>

#include <string>

#include "process/process.h"

namespace netmon {
namespace {

TEST(Base64Encode, Rfc4648Vectors) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
}

TEST(Base64Encode, HighBytesUseWholeAlphabet) {
  EXPECT_EQ(base64_encode(std::string("\xff\xff\xff", 3)), "////");
  EXPECT_EQ(base64_encode(std::string("\xfb\xef\xbe", 3)), "++++");
  EXPECT_EQ(base64_encode(std::string("\0\0\0", 3)), "AAAA");
  EXPECT_EQ(base64_encode(std::string("\xff", 1)), "/w==");
  EXPECT_EQ(base64_encode(std::string("\xff\xfe", 2)), "//4=");
}

TEST(MakeExecId, MatchesReferenceExample) {
  EXPECT_EQ(make_exec_id(84537, 869494270000000), "ODQ1Mzc6ODY5NDk0MjcwMDAwMDAw");
}

TEST(MakeExecId, KeepsFullNanosecondStart) {
  const std::string id = make_exec_id(84537, 869494270000000);
  EXPECT_EQ(make_exec_id(84537, 869494270000001), base64_encode("84537:869494270000001"));
  EXPECT_NE(make_exec_id(84537, 869494270000001), id);
  EXPECT_NE(make_exec_id(84537, 869494279999999), id);
}

TEST(MakeExecId, EncodesPidColonStart) {
  EXPECT_EQ(make_exec_id(1, 0), base64_encode("1:0"));
  EXPECT_EQ(make_exec_id(4294967295u, 18446744073709551615ull),
            base64_encode("4294967295:18446744073709551615"));
}

TEST(MakeExecId, DiffersByPid) {
  EXPECT_NE(make_exec_id(84537, 869494270000000), make_exec_id(84538, 869494270000000));
}

}  // namespace
}  // namespace netmon
