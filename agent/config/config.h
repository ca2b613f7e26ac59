// The YAML configuration file: parsed, checked against the known keys, and turned into plain
// text values (which agent/cli applies with the same code as flags and environment variables)
// and the rules (RulesSpec, compiled by agent/rules). The only module that includes yaml-cpp; its
// exceptions are caught here and its types never leave config.cpp.
//
// The file is a mapping. A dotted key ("kubernetes.kubelet_url") is written nested:
//
//   kubernetes:
//     kubelet_url: https://10.0.0.5:10250/pods
//
// The top-level keys `egress`, `ingress`, `lists` and `macros` hold the rules (docs/rules.md).
// Everything else is an error that names the file, line, column and key: an unknown key at any
// level, a key given twice, a value of the wrong type, malformed YAML, more than one document.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "rules/rules.h"

namespace netmon::config {

// The type a key's value must have in the file.
enum class Kind {
  kBool,    // true or false, unquoted (also True/TRUE/False/FALSE; yes/no/on/off are rejected)
  kNumber,  // an unquoted scalar; its text is handed on as written (the setting checks range)
  kString,  // any scalar, quoted or not; null (an empty value) is rejected, "" is the empty string
  kList,    // a list of scalars, or one comma-separated string
  // An ordered mapping of names to lists of scalars, e.g. {private: [10.0.0.0/8], metadata: []}:
  // names are non-empty, given once, without '=', ';' or ','; items are non-empty scalars
  // without ',' or ';'. Its text is map_of_lists_text()'s, e.g. "private=10.0.0.0/8;metadata=".
  kMapOfLists,
};

struct Key {
  std::string_view path;  // dotted, e.g. "kubernetes.kubelet_url"
  Kind kind;
  // Optional: checks each item of a kList (given as a list) or kMapOfLists value, so that a bad
  // one is reported at its own line and column. The message is the "why" of the error.
  Result<void> (*check_item)(std::string_view item) = nullptr;
};

// One setting as written in the file, as text a flag would take: booleans "true"/"false",
// numbers and strings as written, lists joined with commas, mappings of lists as
// map_of_lists_text() writes them.
struct Value {
  std::string key;  // the dotted path
  std::string text;
  int line = 0;  // 1-based position of the value (of the key when the value is on a later line)
  int column = 0;
};

struct Document {
  std::vector<Value> values;  // in file order; each key at most once
  RulesSpec rules;            // RuleSpec::line is the 1-based line of the rule's entry
};

// The keys reserved for the rules; no Key may use them.
inline constexpr std::string_view kRuleKeys[] = {"egress", "ingress", "lists", "macros"};

// A kMapOfLists value: (name, items) pairs in the file's order.
using NamedLists = std::vector<std::pair<std::string, std::vector<std::string>>>;

// The text form of a kMapOfLists value, as a flag or an environment variable takes it: entries
// separated by ';', each NAME=ITEM,ITEM (a name without items: "NAME="); "" when there is none.
// Lists as parse() gives them (no separator in a name or item) read back the same.
std::string map_of_lists_text(const NamedLists& lists);

// Reads map_of_lists_text()'s form. Spaces around a name or an item are dropped; "" (or only
// spaces) is no entry. Fails, naming the entry, on an entry without '=', an empty name or item
// (between two separators), and a name given twice.
Result<NamedLists> parse_map_of_lists_text(std::string_view text);

// Parses one YAML document against `keys`. `source` (the file name) starts every error message:
// "SOURCE:LINE:COLUMN: KEY: why". An empty document is an empty configuration.
Result<Document> parse(std::string_view text, std::string_view source,
                       const std::vector<Key>& keys);

// Reads `path` and parses it; a missing or unreadable file is an error naming the path.
Result<Document> load_file(const std::string& path, const std::vector<Key>& keys);

// Renders settings (in the given order, text as in Value) and the rules as a YAML document that
// parse() reads back to the same values and rules (lines aside).
std::string render(const std::vector<std::pair<Key, std::string>>& values, const RulesSpec& rules,
                   std::string_view header_comment);

}  // namespace netmon::config
