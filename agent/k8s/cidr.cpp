#include "k8s/cidr.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "common/text.h"

namespace netmon {

namespace {

size_t address_length(IpAddress::Family family) {
  return family == IpAddress::Family::kV4 ? 4 : 16;
}

constexpr std::array<uint8_t, 12> kV4MappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// `bytes` with the bits past `prefix` zeroed.
std::array<uint8_t, 16> masked(const std::array<uint8_t, 16>& bytes, unsigned prefix) {
  std::array<uint8_t, 16> out{};
  const unsigned full = prefix / 8;
  std::memcpy(out.data(), bytes.data(), full);
  if (const unsigned rest = prefix % 8; rest != 0) {
    out[full] = static_cast<uint8_t>(bytes[full] & (0xff << (8 - rest)));
  }
  return out;
}

}  // namespace

std::optional<IpAddress> parse_ip_address(std::string_view text) {
  // inet_pton needs a NUL-terminated string; the longest IPv6 text is 45 characters.
  char buffer[64];
  if (text.empty() || text.size() >= sizeof(buffer)) return std::nullopt;
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  IpAddress out;
  if (text.find(':') == std::string_view::npos) {
    out.family = IpAddress::Family::kV4;
    if (inet_pton(AF_INET, buffer, out.bytes.data()) != 1) return std::nullopt;
  } else {
    out.family = IpAddress::Family::kV6;
    if (inet_pton(AF_INET6, buffer, out.bytes.data()) != 1) return std::nullopt;
  }
  return out;
}

IpAddress canonical_address(const IpAddress& address) {
  IpAddress out;
  if (address.family == IpAddress::Family::kV6 &&
      std::equal(kV4MappedPrefix.begin(), kV4MappedPrefix.end(), address.bytes.begin())) {
    out.family = IpAddress::Family::kV4;
    std::memcpy(out.bytes.data(), address.bytes.data() + 12, 4);
    return out;
  }
  out.family = address.family;
  std::memcpy(out.bytes.data(), address.bytes.data(), address_length(address.family));
  return out;
}

Result<Cidr> Cidr::parse(std::string_view text) {
  const size_t slash = text.find('/');
  const std::string_view address_text = text.substr(0, slash);
  std::optional<IpAddress> address = parse_ip_address(address_text);
  if (!address) return fail("not an IP address");
  const unsigned max_prefix = address->family == IpAddress::Family::kV4 ? 32 : 128;
  unsigned prefix = max_prefix;
  if (slash != std::string_view::npos) {
    const std::string_view prefix_text = text.substr(slash + 1);
    const char* end = prefix_text.data() + prefix_text.size();
    auto [ptr, ec] = std::from_chars(prefix_text.data(), end, prefix);
    if (prefix_text.empty() || ec != std::errc() || ptr != end || prefix > max_prefix) {
      return fail("prefix length is not a number from 0 to " + std::to_string(max_prefix));
    }
  }
  Cidr cidr;
  cidr.network = *address;
  cidr.prefix = static_cast<uint8_t>(prefix);
  for (unsigned bit = prefix; bit < max_prefix; ++bit) {
    if ((cidr.network.bytes[bit / 8] >> (7 - bit % 8)) & 1) {
      return fail("address bits past the /" + std::to_string(prefix) + " prefix are not zero");
    }
  }
  return cidr;
}

bool Cidr::contains(const IpAddress& address) const {
  if (address.family != network.family) return false;
  const unsigned full = prefix / 8;
  if (std::memcmp(address.bytes.data(), network.bytes.data(), full) != 0) return false;
  const unsigned rest = prefix % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (address.bytes[full] & mask) == network.bytes[full];
}

std::string Cidr::to_string() const {
  char buffer[INET6_ADDRSTRLEN] = {};
  inet_ntop(network.family == IpAddress::Family::kV4 ? AF_INET : AF_INET6, network.bytes.data(),
            buffer, sizeof(buffer));
  return std::string(buffer) + "/" + std::to_string(prefix);
}

Result<CidrClasses> CidrClasses::parse(
    const std::vector<std::pair<std::string, std::vector<std::string>>>& classes) {
  CidrClasses out;
  for (const auto& [name, cidrs] : classes) {
    if (name.empty()) return fail("external network class with an empty name");
    if (std::find(out.names_.begin(), out.names_.end(), name) != out.names_.end()) {
      return fail("external network class " + quoted(name) + " is given twice");
    }
    const auto index = static_cast<uint32_t>(out.names_.size());
    out.names_.push_back(name);
    for (const std::string& text : cidrs) {
      Result<Cidr> cidr = Cidr::parse(text);
      if (!cidr) {
        return fail("external network class " + quoted(name) + ": " + quoted(text) +
                    " is not a CIDR: " + cidr.error().message);
      }
      std::vector<Level>& levels =
          cidr->network.family == IpAddress::Family::kV4 ? out.v4_ : out.v6_;
      auto level = std::find_if(levels.begin(), levels.end(),
                                [&](const Level& l) { return l.prefix == cidr->prefix; });
      if (level == levels.end()) level = levels.insert(levels.end(), Level{cidr->prefix, {}});
      level->networks.emplace_back(cidr->network.bytes, index);
    }
  }
  // Sorted by network, then class; a network in several classes keeps the first.
  for (std::vector<Level>* levels : {&out.v4_, &out.v6_}) {
    for (Level& level : *levels) {
      auto& networks = level.networks;
      std::sort(networks.begin(), networks.end());
      networks.erase(std::unique(networks.begin(), networks.end(),
                                 [](const auto& a, const auto& b) { return a.first == b.first; }),
                     networks.end());
    }
  }
  return out;
}

std::string_view CidrClasses::classify(const IpAddress& address) const {
  const IpAddress canonical = canonical_address(address);
  const std::vector<Level>& levels = canonical.family == IpAddress::Family::kV4 ? v4_ : v6_;
  uint32_t best = UINT32_MAX;  // the first class with a network containing the address
  for (const Level& level : levels) {
    const std::array<uint8_t, 16> key = masked(canonical.bytes, level.prefix);
    const auto it = std::lower_bound(
        level.networks.begin(), level.networks.end(), key,
        [](const auto& entry, const std::array<uint8_t, 16>& k) { return entry.first < k; });
    if (it != level.networks.end() && it->first == key) best = std::min(best, it->second);
  }
  return best == UINT32_MAX ? std::string_view() : std::string_view(names_[best]);
}

}  // namespace netmon
