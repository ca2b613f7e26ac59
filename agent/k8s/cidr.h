// IP address prefixes (CIDRs) and the ordered, named classes of them that name external peers
// (kubernetes.external_networks). Plain values: no JSON, no YAML; the configuration code feeds
// the classes as (name, [cidr, ...]) pairs.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "events/event.h"

namespace netmon {

// A textual IPv4 ("10.1.2.3") or IPv6 ("fd00::1") address; nullopt when it is neither. IPv6
// text in the IPv4-mapped form ("::ffff:10.1.2.3") stays IPv6 here (see canonical_address).
std::optional<IpAddress> parse_ip_address(std::string_view text);

// The address a peer lookup uses: an IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a dual-stack
// socket reports for an IPv4 peer) becomes the IPv4 address; every other address is returned
// with the bytes past its family's length zeroed.
IpAddress canonical_address(const IpAddress& address);

// "10.0.0.0/8", "fd00::/8", or a bare address (a /32 or /128). The address bits past the prefix
// must be zero ("10.0.0.1/8" is refused, as Kubernetes refuses it in a podCIDR).
struct Cidr {
  IpAddress network;  // bits past `prefix` are zero
  uint8_t prefix = 0;

  static Result<Cidr> parse(std::string_view text);
  // False for the other family (an IPv4 CIDR never contains an IPv6 address: callers pass
  // canonical addresses).
  bool contains(const IpAddress& address) const;
  std::string to_string() const;
};

// Ordered named classes of CIDRs, e.g. {private: [10.0.0.0/8, 192.168.0.0/16], metadata:
// [169.254.169.254/32]}: an address belongs to the first class (in the given order) that has a
// CIDR containing it; overlapping classes are allowed and the earlier one wins. Immutable after
// parse; classify() does not allocate and is safe from any thread. Its cost grows with the number
// of distinct prefix lengths (one binary search each), not with the number of CIDRs.
class CidrClasses {
 public:
  CidrClasses() = default;

  // Fails naming the class and the CIDR when a CIDR does not parse, and on an empty or repeated
  // class name. A class with no CIDR is kept (it never matches).
  static Result<CidrClasses> parse(
      const std::vector<std::pair<std::string, std::vector<std::string>>>& classes);

  // The name of the first class containing `address` (canonicalised first); empty when none.
  std::string_view classify(const IpAddress& address) const;

  size_t class_count() const { return names_.size(); }

 private:
  // The networks of one family and prefix length, sorted, each with the index of the first class
  // that holds it.
  struct Level {
    uint8_t prefix = 0;
    std::vector<std::pair<std::array<uint8_t, 16>, uint32_t>> networks;
  };

  std::vector<std::string> names_;
  std::vector<Level> v4_;
  std::vector<Level> v6_;
};

}  // namespace netmon
