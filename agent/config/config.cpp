#include "config/config.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "common/files.h"
#include "common/text.h"

namespace netmon::config {
namespace {

constexpr size_t kMaxFileBytes = 16u << 20;  // a bigger "configuration" is a mistake
// How much of a value or key from the file a message quotes: enough to recognise it, never a
// whole file that happens to parse as one long scalar.
constexpr size_t kExcerptBytes = 60;

std::string excerpt(std::string_view text) { return quoted(text, kExcerptBytes); }

// A dotted key path as messages show it: as it is when every part is a name (letters, digits,
// '_', '-', a "[N]" index) of at most kExcerptBytes, else its leading parts that are and the
// length of the rest, unquoted: a file that is no configuration (--config /etc/shadow, whose
// lines YAML reads as keys) is not echoed.
std::string shown_path(std::string_view path) {
  const auto name_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '[' || c == ']';
  };
  size_t good = 0;  // path[0, good) is whole name parts, each followed by '.'
  for (size_t start = 0;;) {
    const size_t dot = std::min(path.find('.', start), path.size());
    const std::string_view part = path.substr(start, dot - start);
    if (part.empty() || part.size() > kExcerptBytes ||
        !std::all_of(part.begin(), part.end(), name_char)) {
      break;
    }
    if (dot == path.size()) return std::string(path);
    start = good = dot + 1;
  }
  return std::string(path.substr(0, good)) + "(a key of " + std::to_string(path.size() - good) +
         " bytes that is not a name)";
}

std::string position(std::string_view source, const YAML::Mark& mark) {
  std::string out(source);
  if (!mark.is_null()) {
    out += ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
  }
  return out;
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "an empty value";
    case YAML::NodeType::Scalar:
      return "the scalar " + excerpt(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

// A quoted scalar ("10", '10') or one tagged !!str is a string, even when it reads as a number.
bool is_string_scalar(const YAML::Node& node) {
  return node.Tag() == "!" || node.Tag() == "tag:yaml.org,2002:str";
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (const std::string& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

// The code point of the UTF-8 sequence at text[i] and its length; length 0 when it is not
// valid UTF-8 (truncated, overlong, a surrogate, beyond U+10FFFF).
std::pair<uint32_t, size_t> decode_utf8(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t lead = byte(i);
  if (lead < 0x80) return {lead, 1};
  size_t length = 0;
  uint32_t cp = 0;
  uint32_t min = 0;
  if ((lead & 0xE0) == 0xC0) {
    length = 2, cp = lead & 0x1F, min = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3, cp = lead & 0x0F, min = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4, cp = lead & 0x07, min = 0x10000;
  } else {
    return {0, 0};
  }
  if (i + length > text.size()) return {0, 0};
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return {0, 0};
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {0, 0};
  return {cp, length};
}

// A C0 control character other than tab and the line breaks: YAML allows them only escaped.
// (YAML also excludes DEL, most C1 controls and U+FFFE/U+FFFF, but yaml-cpp's emitter writes
// those unescaped, so they are accepted for --print-config's output to load back.)
bool raw_control(uint32_t cp) { return cp < 0x20 && cp != 0x09 && cp != 0x0A && cp != 0x0D; }

// The offset of the first character that is not valid UTF-8 (or, with `raw`, a control character
// YAML allows only escaped), and why; npos when there is none.
std::pair<size_t, std::string> first_bad_character(std::string_view text, bool raw) {
  for (size_t i = 0; i < text.size();) {
    const auto [cp, length] = decode_utf8(text, i);
    if (length == 0) return {i, "invalid UTF-8"};
    if (raw && raw_control(cp)) {
      char hex[16];
      std::snprintf(hex, sizeof(hex), "U+%04X", static_cast<unsigned>(cp));
      return {i, std::string("the control character ") + hex + ", which YAML allows only escaped"};
    }
    i += length;
  }
  return {std::string_view::npos, ""};
}

std::string child_path(std::string_view prefix, std::string_view name) {
  return prefix.empty() ? std::string(name) : std::string(prefix) + "." + std::string(name);
}

class Reader {
 public:
  Reader(std::string_view text, std::string_view source, const std::vector<Key>& keys)
      : text_(text), source_(source), keys_(keys) {}

  Result<Document> read(const YAML::Node& root) {
    if (!root.IsNull()) {
      if (!root.IsMap()) {
        // Not even the first token is right: the file is likely not a configuration at all
        // (--config /etc/shadow), so nothing of it is quoted.
        return fail(position(source_, root.Mark()) +
                    ": the configuration must be a mapping of keys, got " +
                    (root.IsScalar() ? std::string("a scalar") : describe(root)));
      }
      if (auto r = section(root, ""); !r) return tl::unexpected(r.error());
    }
    return std::move(document_);
  }

 private:
  tl::unexpected<Error> error(const YAML::Mark& mark, std::string_view path,
                              const std::string& why) const {
    return fail(position(source_, mark) + ": " + shown_path(path) + ": " + why);
  }

  // The mark to report for a value: a null value's mark is the next token's, so use the key's.
  static YAML::Mark value_mark(const YAML::Node& key_node, const YAML::Node& value) {
    return value.IsNull() ? key_node.Mark() : value.Mark();
  }

  // A scalar's text. yaml-cpp takes a quoted scalar left open at the end of the file up to the
  // end of the file ('name: "abc' and every line after it); that is an error here.
  Result<std::string> scalar(const YAML::Node& node, std::string_view path) const {
    const YAML::Mark mark = node.Mark();
    const size_t pos = mark.pos < 0 ? text_.size() : static_cast<size_t>(mark.pos);
    if (pos < text_.size() && (text_[pos] == '"' || text_[pos] == '\'')) {
      const char quote = text_[pos];
      bool closed = false;
      for (size_t i = pos + 1; i < text_.size() && !closed; ++i) {
        if (quote == '"' && text_[i] == '\\') {
          ++i;
        } else if (text_[i] == quote) {
          if (quote == '\'' && i + 1 < text_.size() && text_[i + 1] == '\'') {
            ++i;  // '' is a quote inside a single-quoted scalar
          } else {
            closed = true;
          }
        }
      }
      if (!closed) return error(mark, path, "malformed YAML: the quoted string is not closed");
    }
    // The file is valid UTF-8 (see parse()), but an escape such as "\uD800" is not.
    if (auto [at, why] = first_bad_character(node.Scalar(), false); at != std::string::npos) {
      return error(mark, path, "an escape makes " + why);
    }
    return node.Scalar();
  }

  // Calls f(name, key node, value) for each entry of a mapping, after checking that its keys are
  // non-empty scalars given once. `path` is the mapping's own dotted path ("" at the top).
  Result<void> for_each_entry(
      const YAML::Node& map, std::string_view path,
      const std::function<Result<void>(const std::string&, const YAML::Node&, const YAML::Node&)>&
          f) const {
    std::map<std::string, int> seen;  // name -> 1-based line
    for (auto it = map.begin(); it != map.end(); ++it) {
      // Copies: `it->` is a proxy, and a reference into it would dangle.
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      const std::string where = path.empty() ? "key" : std::string(path);
      if (!key.IsScalar()) {
        return error(key.Mark(), where, "keys must be names, got " + describe(key));
      }
      auto text = scalar(key, where);
      if (!text) return tl::unexpected(text.error());
      const std::string& name = *text;
      if (name.empty()) return error(key.Mark(), where, "a key is empty");
      auto [previous, inserted] = seen.emplace(name, key.Mark().line + 1);
      if (!inserted) {
        return error(key.Mark(), child_path(path, name),
                     "given twice (first on line " + std::to_string(previous->second) + ")");
      }
      if (auto r = f(name, key, value); !r) return r;
    }
    return {};
  }

  tl::unexpected<Error> unknown(const YAML::Node& key_node, std::string_view prefix,
                                const std::string& name,
                                const std::vector<std::string>& siblings) const {
    const std::string path = child_path(prefix, name);
    std::string hint;
    // Right name in the wrong section, e.g. a top-level kubelet_url.
    for (const Key& k : keys_) {
      const size_t dot = k.path.rfind('.');
      const std::string_view last = dot == std::string_view::npos ? k.path : k.path.substr(dot + 1);
      if (last == name && k.path != path) hint = "did you mean " + std::string(k.path) + "?";
    }
    if (hint.empty()) {
      size_t best = 3;  // at most two edits away
      for (const std::string& s : siblings) {
        if (const size_t d = edit_distance(name, s); d < best) {
          best = d;
          hint = "did you mean " + child_path(prefix, s) + "?";
        }
      }
    }
    if (hint.empty()) hint = "the keys here are " + join(siblings, ", ");
    return error(key_node.Mark(), path, "unknown key; " + hint);
  }

  // The names one level below `prefix` (the settings' and, at the top, the rules' keys).
  std::vector<std::string> names_below(std::string_view prefix) const {
    std::vector<std::string> names;
    auto add = [&names](std::string_view n) {
      if (std::find(names.begin(), names.end(), n) == names.end()) names.emplace_back(n);
    };
    for (const Key& k : keys_) {
      std::string_view rest = k.path;
      if (!prefix.empty()) {
        if (rest.size() <= prefix.size() + 1 || rest.substr(0, prefix.size()) != prefix ||
            rest[prefix.size()] != '.') {
          continue;
        }
        rest.remove_prefix(prefix.size() + 1);
      }
      add(rest.substr(0, rest.find('.')));
    }
    if (prefix.empty()) {
      for (std::string_view r : kRuleKeys) add(r);
    }
    return names;
  }

  const Key* find_key(std::string_view path) const {
    for (const Key& k : keys_) {
      if (k.path == path) return &k;
    }
    return nullptr;
  }

  bool is_section(std::string_view path) const {
    for (const Key& k : keys_) {
      if (k.path.size() > path.size() && k.path.substr(0, path.size()) == path &&
          k.path[path.size()] == '.') {
        return true;
      }
    }
    return false;
  }

  Result<void> section(const YAML::Node& map, const std::string& prefix) {
    const std::vector<std::string> siblings = names_below(prefix);
    return for_each_entry(map, prefix,
                          [&](const std::string& name, const YAML::Node& key_node,
                              const YAML::Node& value) -> Result<void> {
                            const std::string path = child_path(prefix, name);
                            if (const Key* key = find_key(path))
                              return setting(*key, key_node, value);
                            if (is_section(path)) {
                              if (value.IsNull())
                                return {};  // an empty section: every key keeps its value
                              if (!value.IsMap()) {
                                return error(value_mark(key_node, value), path,
                                             "expected a mapping of " +
                                                 join(names_below(path), ", ") + ", got " +
                                                 describe(value));
                              }
                              return section(value, path);
                            }
                            if (prefix.empty()) {
                              if (name == "egress")
                                return direction(key_node, value, name, document_.rules.egress);
                              if (name == "ingress") {
                                return direction(key_node, value, name, document_.rules.ingress);
                              }
                              if (name == "lists") return lists(key_node, value);
                              if (name == "macros") return macros(key_node, value);
                            }
                            return unknown(key_node, prefix, name, siblings);
                          });
  }

  Result<bool> as_bool(const YAML::Node& key_node, const YAML::Node& value,
                       std::string_view path) const {
    const YAML::Mark mark = value_mark(key_node, value);
    if (!value.IsScalar())
      return error(mark, path, "expected true or false, got " + describe(value));
    const std::string& text = value.Scalar();
    if (is_string_scalar(value)) {
      return error(mark, path, "expected true or false, got the quoted string " + excerpt(text));
    }
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
    return error(mark, path,
                 "expected true or false, got " + excerpt(text) +
                     " (YAML 1.1 spellings such as yes/no/on/off are not accepted)");
  }

  Result<std::string> as_string(const YAML::Node& key_node, const YAML::Node& value,
                                std::string_view path) const {
    if (value.IsScalar()) return scalar(value, path);
    const YAML::Mark mark = value_mark(key_node, value);
    if (value.IsNull()) return error(mark, path, "has no value (write \"\" for an empty string)");
    return error(mark, path, "expected a string, got " + describe(value));
  }

  Result<void> setting(const Key& key, const YAML::Node& key_node, const YAML::Node& value) {
    const YAML::Mark mark = value_mark(key_node, value);
    Value out{std::string(key.path), "", mark.line + 1, mark.column + 1};
    switch (key.kind) {
      case Kind::kBool: {
        auto b = as_bool(key_node, value, key.path);
        if (!b) return tl::unexpected(b.error());
        out.text = *b ? "true" : "false";
        break;
      }
      case Kind::kNumber:
        if (!value.IsScalar()) {
          return error(mark, key.path, "expected a number, got " + describe(value));
        }
        if (is_string_scalar(value)) {
          return error(mark, key.path,
                       "expected a number, got the quoted string " + excerpt(value.Scalar()));
        }
        out.text = value.Scalar();
        break;
      case Kind::kString: {
        auto s = as_string(key_node, value, key.path);
        if (!s) return tl::unexpected(s.error());
        out.text = std::move(*s);
        break;
      }
      case Kind::kList:
        if (value.IsScalar()) {
          auto s = scalar(value, key.path);
          if (!s) return tl::unexpected(s.error());
          out.text = std::move(*s);
        } else if (value.IsSequence()) {
          std::vector<std::string> items;
          for (size_t i = 0; i < value.size(); ++i) {
            const YAML::Node item = value[i];
            const std::string item_path = std::string(key.path) + "[" + std::to_string(i) + "]";
            if (!item.IsScalar()) {
              return error(value_mark(value, item), item_path,
                           "expected a string, got " + describe(item));
            }
            auto s = scalar(item, item_path);
            if (!s) return tl::unexpected(s.error());
            if (s->empty() || s->find(',') != std::string::npos) {
              return error(item.Mark(), item_path,
                           excerpt(*s) + " is not a single item (empty or with a comma)");
            }
            if (auto r = checked_item(key, item, item_path, *s); !r) return r;
            items.push_back(std::move(*s));
          }
          out.text = join(items, ",");
        } else {
          return error(mark, key.path,
                       "expected a list or a comma-separated string, got " + describe(value));
        }
        break;
      case Kind::kMapOfLists: {
        auto lists = map_of_lists(key, key_node, value);
        if (!lists) return tl::unexpected(lists.error());
        out.text = map_of_lists_text(*lists);
        break;
      }
    }
    document_.values.push_back(std::move(out));
    return {};
  }

  // key.check_item's verdict on one item, at the item's position.
  Result<void> checked_item(const Key& key, const YAML::Node& item, std::string_view item_path,
                            std::string_view text) const {
    if (!key.check_item) return {};
    if (auto r = key.check_item(text); !r) return error(item.Mark(), item_path, r.error().message);
    return {};
  }

  // A kMapOfLists value: a mapping (in the file's order) of names to lists of scalars.
  Result<NamedLists> map_of_lists(const Key& key, const YAML::Node& key_node,
                                  const YAML::Node& value) const {
    const std::string_view path = key.path;
    const YAML::Mark mark = value_mark(key_node, value);
    if (value.IsNull()) return error(mark, path, "has no value (write {} for none)");
    if (!value.IsMap()) {
      return error(mark, path, "expected a mapping of names to lists, got " + describe(value));
    }
    NamedLists lists;
    auto r = for_each_entry(
        value, path,
        [&](const std::string& name, const YAML::Node& name_node,
            const YAML::Node& list) -> Result<void> {
          const std::string list_path = child_path(path, name);
          if (name.find_first_of("=;,") != std::string::npos) {
            return error(name_node.Mark(), path,
                         "the name " + excerpt(name) + " holds '=', ';' or ','");
          }
          if (!list.IsSequence()) {
            return error(value_mark(name_node, list), list_path,
                         "expected a list, got " + describe(list));
          }
          std::vector<std::string> items;
          for (size_t i = 0; i < list.size(); ++i) {
            const YAML::Node item = list[i];
            const std::string item_path = list_path + "[" + std::to_string(i) + "]";
            if (!item.IsScalar()) {
              return error(value_mark(list, item), item_path,
                           "expected a string, got " + describe(item));
            }
            auto s = scalar(item, item_path);
            if (!s) return tl::unexpected(s.error());
            if (s->empty() || s->find_first_of(",;") != std::string::npos) {
              return error(item.Mark(), item_path,
                           excerpt(*s) + " is not a single item (empty, or with ',' or ';')");
            }
            if (auto checked = checked_item(key, item, item_path, *s); !checked) {
              return tl::unexpected(checked.error());
            }
            items.push_back(std::move(*s));
          }
          lists.emplace_back(name, std::move(items));
          return {};
        });
    if (!r) return tl::unexpected(r.error());
    return lists;
  }

  Result<void> direction(const YAML::Node& key_node, const YAML::Node& value,
                         const std::string& name, DirectionSpec& out) {
    if (value.IsNull()) return {};
    if (!value.IsMap()) {
      return error(value_mark(key_node, value), name,
                   "expected a mapping of enabled, rules, got " + describe(value));
    }
    return for_each_entry(
        value, name,
        [&](const std::string& field, const YAML::Node& field_key,
            const YAML::Node& field_value) -> Result<void> {
          const std::string path = name + "." + field;
          if (field == "enabled") {
            auto b = as_bool(field_key, field_value, path);
            if (!b) return tl::unexpected(b.error());
            out.enabled = *b;
            return {};
          }
          if (field == "rules") {
            if (field_value.IsNull()) return {};
            if (!field_value.IsSequence()) {
              return error(value_mark(field_key, field_value), path,
                           "expected a list of rules, got " + describe(field_value));
            }
            for (size_t i = 0; i < field_value.size(); ++i) {
              auto rule =
                  rule_entry(field_value[i], field_key, path + "[" + std::to_string(i) + "]");
              if (!rule) return tl::unexpected(rule.error());
              out.rules.push_back(std::move(*rule));
            }
            return {};
          }
          return unknown(field_key, name, field, {"enabled", "rules"});
        });
  }

  Result<RuleSpec> rule_entry(const YAML::Node& entry, const YAML::Node& list_key,
                              const std::string& path) const {
    const YAML::Mark mark = value_mark(list_key, entry);
    if (!entry.IsMap()) {
      return error(mark, path, "expected a mapping of rule, scope, event, got " + describe(entry));
    }
    RuleSpec rule;
    rule.line = mark.line + 1;
    bool named = false;
    auto r =
        for_each_entry(entry, path,
                       [&](const std::string& field, const YAML::Node& field_key,
                           const YAML::Node& field_value) -> Result<void> {
                         const std::string field_path = path + "." + field;
                         std::string* target = field == "rule"    ? &rule.name
                                               : field == "scope" ? &rule.scope
                                               : field == "event" ? &rule.event
                                                                  : nullptr;
                         if (!target)
                           return unknown(field_key, path, field, {"rule", "scope", "event"});
                         auto text = as_string(field_key, field_value, field_path);
                         if (!text) return tl::unexpected(text.error());
                         if (field == "rule") {
                           if (text->empty())
                             return error(field_value.Mark(), field_path, "a rule needs a name");
                           named = true;
                         }
                         *target = std::move(*text);
                         return {};
                       });
    if (!r) return tl::unexpected(r.error());
    if (!named) return error(mark, path, "has no `rule:` (every rule needs a name)");
    return rule;
  }

  Result<void> lists(const YAML::Node& key_node, const YAML::Node& value) {
    if (value.IsNull()) return {};
    if (!value.IsMap()) {
      return error(value_mark(key_node, value), "lists",
                   "expected a mapping of list names to lists of values, got " + describe(value));
    }
    return for_each_entry(value, "lists",
                          [&](const std::string& name, const YAML::Node& list_key,
                              const YAML::Node& list) -> Result<void> {
                            const std::string path = "lists." + name;
                            if (!list.IsSequence()) {
                              return error(value_mark(list_key, list), path,
                                           "expected a list of values, got " + describe(list));
                            }
                            std::vector<std::string> values;
                            for (size_t i = 0; i < list.size(); ++i) {
                              const YAML::Node item = list[i];
                              const std::string item_path = path + "[" + std::to_string(i) + "]";
                              if (!item.IsScalar()) {
                                return error(
                                    value_mark(list_key, item), item_path,
                                    "expected a string or a number, got " + describe(item));
                              }
                              auto s = scalar(item, item_path);
                              if (!s) return tl::unexpected(s.error());
                              values.push_back(std::move(*s));
                            }
                            document_.rules.lists[name] = std::move(values);
                            return {};
                          });
  }

  Result<void> macros(const YAML::Node& key_node, const YAML::Node& value) {
    if (value.IsNull()) return {};
    if (!value.IsMap()) {
      return error(value_mark(key_node, value), "macros",
                   "expected a mapping of macro names to expressions, got " + describe(value));
    }
    return for_each_entry(value, "macros",
                          [&](const std::string& name, const YAML::Node& macro_key,
                              const YAML::Node& expression) -> Result<void> {
                            auto text = as_string(macro_key, expression, "macros." + name);
                            if (!text) return tl::unexpected(text.error());
                            document_.rules.macros[name] = std::move(*text);
                            return {};
                          });
  }

  std::string_view text_;
  std::string_view source_;
  const std::vector<Key>& keys_;
  Document document_;
};

// Records where each document starts, and ignores the rest.
class DocumentStarts final : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> marks;

  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// Fails when the text holds more than one document. yaml-cpp 0.7 reports a document that starts
// with a token it cannot place (a stray ',') again and again without consuming it, so that
// YAML::LoadAll never returns: at most three documents are looked at, and one starting where
// the previous one started is that token.
Result<void> check_single_document(const std::string& text, std::string_view source) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStarts starts;
  for (int i = 0; i < 3 && parser.HandleNextDocument(starts); ++i) {
  }
  const std::vector<YAML::Mark>& marks = starts.marks;
  for (size_t i = 1; i < marks.size(); ++i) {
    if (marks[i].pos == marks[i - 1].pos) {
      const size_t pos = static_cast<size_t>(std::max(marks[i].pos, 0));
      const std::string_view token = pos < text.size() ? std::string_view(text).substr(pos, 1) : "";
      return fail(position(source, marks[i]) + ": malformed YAML: unexpected " + excerpt(token));
    }
  }
  if (marks.size() > 1) {
    return fail(position(source, marks[1]) +
                ": more than one YAML document (a second '---'); put every key in one");
  }
  return {};
}

// The settings as a tree of sections, in the order their first key was given.
struct Section {
  std::string name;
  const std::pair<Key, std::string>* leaf = nullptr;
  std::vector<Section> children;
};

void insert(Section& root, const std::pair<Key, std::string>& value) {
  Section* at = &root;
  std::string_view rest = value.first.path;
  while (true) {
    const size_t dot = rest.find('.');
    const std::string_view name = rest.substr(0, dot);
    auto it = std::find_if(at->children.begin(), at->children.end(),
                           [name](const Section& s) { return s.name == name; });
    if (it == at->children.end()) {
      at->children.push_back(Section{std::string(name), nullptr, {}});
      it = at->children.end() - 1;
    }
    at = &*it;
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
  }
  at->leaf = &value;
}

// Writes a string the emitter's automatic style would get wrong: it writes a carriage return or
// another control character unquoted, which reads back as a line break or not at all. Such
// strings, and any with non-ASCII characters, are double-quoted, where they are escaped.
YAML::Emitter& string(YAML::Emitter& out, std::string_view text) {
  const bool plain_safe = std::all_of(text.begin(), text.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte >= 0x20 && byte < 0x7F;
  });
  if (!plain_safe) out << YAML::DoubleQuoted;
  return out << std::string(text);
}

// An item of a flow list ("[a, b]"): as string(), and double-quoted when it holds a ':'. yaml-cpp
// writes "::1" or "fd00::/8" plain there, which it reads back but YAML 1.1 parsers such as
// PyYAML refuse ("found ':'").
YAML::Emitter& flow_item(YAML::Emitter& out, std::string_view text) {
  if (text.find(':') != std::string_view::npos) out << YAML::DoubleQuoted;
  return string(out, text);
}

void emit_list(YAML::Emitter& out, std::string_view csv) {
  out << YAML::Flow << YAML::BeginSeq;
  size_t pos = 0;
  while (pos < csv.size()) {
    size_t comma = csv.find(',', pos);
    if (comma == std::string_view::npos) comma = csv.size();
    if (comma > pos) flow_item(out, csv.substr(pos, comma - pos));
    pos = comma + 1;
  }
  out << YAML::EndSeq;
}

// A kMapOfLists value from its text (as the settings show it): a block mapping of flow lists,
// or {} when empty. Text that does not read (no setting shows such) is written as a string, for
// parse() to refuse with a message.
void emit_map_of_lists(YAML::Emitter& out, std::string_view text) {
  auto lists = parse_map_of_lists_text(text);
  if (!lists) {
    string(out, text);
    return;
  }
  if (lists->empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [name, items] : *lists) {
    string(out << YAML::Key, name) << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const std::string& item : items) flow_item(out, item);
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
}

void emit(YAML::Emitter& out, const Section& section) {
  out << YAML::Key << section.name << YAML::Value;
  if (section.leaf) {
    if (section.leaf->first.kind == Kind::kList) {
      emit_list(out, section.leaf->second);
    } else if (section.leaf->first.kind == Kind::kMapOfLists) {
      emit_map_of_lists(out, section.leaf->second);
    } else {
      string(out, section.leaf->second);
    }
    return;
  }
  out << YAML::BeginMap;
  for (const Section& child : section.children) emit(out, child);
  out << YAML::EndMap;
}

void emit(YAML::Emitter& out, std::string_view name, const DirectionSpec& direction) {
  out << YAML::Key << std::string(name) << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << direction.enabled;
  out << YAML::Key << "rules" << YAML::Value;
  if (direction.rules.empty()) out << YAML::Flow;
  out << YAML::BeginSeq;
  for (const RuleSpec& rule : direction.rules) {
    string(out << YAML::BeginMap << YAML::Key << "rule" << YAML::Value, rule.name);
    if (!rule.scope.empty()) string(out << YAML::Key << "scope" << YAML::Value, rule.scope);
    if (!rule.event.empty()) string(out << YAML::Key << "event" << YAML::Value, rule.event);
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
}

// `text` without the spaces at either end.
std::string_view trim_spaces(std::string_view text) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  return text;
}

}  // namespace

std::string map_of_lists_text(const NamedLists& lists) {
  std::string out;
  for (const auto& [name, items] : lists) {
    if (!out.empty()) out += ';';
    out += name;
    out += '=';
    out += join(items, ",");
  }
  return out;
}

Result<NamedLists> parse_map_of_lists_text(std::string_view text) {
  NamedLists lists;
  if (trim_spaces(text).empty()) return lists;
  std::set<std::string, std::less<>> names;
  while (true) {
    const size_t semicolon = std::min(text.find(';'), text.size());
    const std::string_view entry = text.substr(0, semicolon);
    const size_t equals = entry.find('=');
    if (equals == std::string_view::npos) {
      return fail("the entry " + excerpt(entry) +
                  " is not NAME=ITEM,ITEM (entries separated by ';')");
    }
    const std::string name(trim_spaces(entry.substr(0, equals)));
    if (name.empty()) return fail("the entry " + excerpt(entry) + " has an empty name");
    if (!names.insert(name).second) return fail("the name " + excerpt(name) + " is given twice");
    std::vector<std::string> items;
    const std::string_view csv = entry.substr(equals + 1);
    if (!trim_spaces(csv).empty()) {
      for (size_t pos = 0; pos <= csv.size();) {
        const size_t comma = std::min(csv.find(',', pos), csv.size());
        const std::string_view item = trim_spaces(csv.substr(pos, comma - pos));
        if (item.empty()) return fail("the entry " + excerpt(entry) + " has an empty item");
        items.emplace_back(item);
        pos = comma + 1;
      }
    }
    lists.emplace_back(name, std::move(items));
    if (semicolon == text.size()) break;
    text.remove_prefix(semicolon + 1);
  }
  return lists;
}

Result<Document> parse(std::string_view text, std::string_view source,
                       const std::vector<Key>& keys) {
  try {
    if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // a UTF-8 byte-order mark
    // yaml-cpp passes invalid UTF-8 through, and --print-config could not write it back.
    if (auto [at, why] = first_bad_character(text, true); at != std::string_view::npos) {
      const std::string_view before = text.substr(0, at);
      const size_t line_start = before.rfind('\n');
      const size_t line = static_cast<size_t>(std::count(before.begin(), before.end(), '\n'));
      const size_t column = line_start == std::string_view::npos ? at : at - line_start - 1;
      return fail(std::string(source) + ":" + std::to_string(line + 1) + ":" +
                  std::to_string(column + 1) + ": malformed YAML: " + why);
    }
    const std::string copy(text);
    if (auto r = check_single_document(copy, source); !r) return tl::unexpected(r.error());
    return Reader(text, source, keys).read(YAML::Load(copy));
  } catch (const YAML::Exception& e) {
    // yaml-cpp's messages are fixed texts, some followed by a character of the input; capped
    // all the same.
    std::string why = quoted(e.msg, 200);  // "'msg'" or "'ms...' (N bytes)"
    const size_t close = why.rfind('\'');
    why = why.substr(1, close - 1) + why.substr(close + 1);
    return fail(position(source, e.mark) + ": malformed YAML: " + why);
  } catch (const std::exception& e) {
    return fail(std::string(source) + ": cannot be read as YAML: " + e.what());
  }
}

Result<Document> load_file(const std::string& path, const std::vector<Key>& keys) {
  // A regular file (or a symlink to one) within the cap: a FIFO would block the start, a device
  // such as /dev/zero fill memory.
  auto text = read_regular_file(path, kMaxFileBytes);
  if (!text) {
    return fail("cannot read the configuration file " + text.error().message, text.error().code);
  }
  return parse(*text, path, keys);
}

std::string render(const std::vector<std::pair<Key, std::string>>& values, const RulesSpec& rules,
                   std::string_view header_comment) {
  Section root;
  for (const auto& value : values) insert(root, value);

  YAML::Emitter out;
  if (!header_comment.empty()) out << YAML::Comment(std::string(header_comment)) << YAML::Newline;
  out << YAML::BeginMap;
  for (const Section& section : root.children) emit(out, section);
  emit(out, "egress", rules.egress);
  emit(out, "ingress", rules.ingress);
  out << YAML::Key << "lists" << YAML::Value;
  if (rules.lists.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [name, list] : rules.lists) {
    string(out << YAML::Key, name) << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const std::string& item : list) flow_item(out, item);
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
  out << YAML::Key << "macros" << YAML::Value;
  if (rules.macros.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [name, expression] : rules.macros) {
    string(string(out << YAML::Key, name) << YAML::Value, expression);
  }
  out << YAML::EndMap << YAML::EndMap;
  std::string text = out.c_str();
  text += '\n';
  return text;
}

}  // namespace netmon::config
