// ccn/native/netdef/config.h: the INI dialect of cuda-convnet's layer files.
//
// Python 2 ConfigParser as the originals used it: [sections], `key=value` or `key: value`,
// full-line `#`/`;` comments, inline ` ;`/` #` comments, indented continuation lines,
// case-insensitive keys. Every entry remembers its line so errors can point at it.
#pragma once
#include <string>
#include <vector>

namespace ccn {

struct Entry {
  std::string key;    // as written
  std::string lkey;   // lower-cased, for lookup
  std::string value;  // stripped
  int line = 0;
};

struct Section {
  std::string name;
  int line = 0;
  std::vector<Entry> entries;
  const Entry* find(const std::string& key) const;  // case-insensitive
};

struct ConfigFile {
  std::string path;  // for messages; may be "<string>"
  std::string text;  // the whole file, kept for checkpoints
  std::vector<Section> sections;
  const Section* find(const std::string& name) const;
};

ConfigFile parse_config_text(const std::string& text, const std::string& path);
ConfigFile parse_config_file(const std::string& path);

std::string to_lower(std::string s);
std::string strip(const std::string& s);
std::vector<std::string> split(const std::string& s, char sep);
// The closest candidate within a small edit distance, or "" if none is close.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace ccn
