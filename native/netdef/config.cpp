// ccn/native/netdef/config.cpp: reading the INI dialect (see config.h).
#include "netdef/config.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace ccn {

std::string to_lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

std::string strip(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace((unsigned char)s[b])) ++b;
  while (e > b && std::isspace((unsigned char)s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(strip(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(strip(cur));
  return out;
}

static size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (std::tolower((unsigned char)a[i - 1]) != std::tolower((unsigned char)b[j - 1]));
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = (size_t)-1;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  size_t limit = std::max<size_t>(2, word.size() / 3);
  return best_d <= limit ? best : std::string();
}

const Entry* Section::find(const std::string& key) const {
  std::string lk = to_lower(key);
  for (const auto& e : entries)
    if (e.lkey == lk) return &e;
  return nullptr;
}

const Section* ConfigFile::find(const std::string& name) const {
  for (const auto& s : sections)
    if (s.name == name) return &s;
  return nullptr;
}

static std::string strip_inline_comment(const std::string& v) {
  for (size_t i = 1; i < v.size(); ++i)
    if ((v[i] == ';' || v[i] == '#') && std::isspace((unsigned char)v[i - 1])) return strip(v.substr(0, i));
  return v;
}

// An identifier (letters, digits, '_', '.', starting with a letter or '_') followed by '=' or ':'.
static bool looks_like_key(const std::string& line) {
  size_t i = 0;
  if (line.empty() || !(std::isalpha((unsigned char)line[0]) || line[0] == '_')) return false;
  while (i < line.size() && (std::isalnum((unsigned char)line[i]) || line[i] == '_' || line[i] == '.')) ++i;
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  return i < line.size() && (line[i] == '=' || line[i] == ':');
}

// Whether the value has a '[' or '(' not yet closed.
static bool open_bracket(const std::string& v) {
  int depth = 0;
  for (char c : v) {
    if (c == '[' || c == '(') ++depth;
    else if ((c == ']' || c == ')') && depth > 0) --depth;
  }
  return depth > 0;
}

ConfigFile parse_config_text(const std::string& text_in, const std::string& path) {
  ConfigFile cf;
  cf.path = path;
  cf.text = text_in;
  std::string text = text_in;
  if (text.size() >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
      (unsigned char)text[2] == 0xBF)
    text = text.substr(3);
  for (unsigned char c : text)
    if (c == 0)
      config_error(path, ": this is not a text file (it contains NUL bytes); expected a cuda-convnet layer file.");

  std::istringstream in(text);
  std::string raw;
  int lineno = 0;
  Section* cur = nullptr;
  Entry* last = nullptr;
  while (std::getline(in, raw)) {
    ++lineno;
    if (!raw.empty() && raw.back() == '\r') raw.pop_back();
    std::string line = strip(raw);
    if (line.empty()) {
      last = nullptr;
      continue;
    }
    if (line[0] == '#' || line[0] == ';') continue;
    if (std::isspace((unsigned char)raw[0]) && last) {  // continuation line
      // ConfigParser appends an indented line to the value above it. One that reads like a key
      // of its own (name = or name :) was almost surely meant as one: say so instead of letting
      // it become part of the value. Not inside an open [ or ( of the value above: a schedule
      // (epsW=dexp[base=0.01;\n  numSteps=4]) or an initWFunc's arguments may go on over lines.
      if (looks_like_key(line) && !open_bracket(last->value))
        config_error(path, ":", lineno, ": in section [", cur->name, "]: '", line, "' is indented, so it continues the "
                     "value of '", last->key, "' from line ", last->line, " (indented lines continue the value above "
                     "them) instead of setting '", strip(line.substr(0, line.find_first_of("=:"))),
                     "'. Remove the indentation.");
      last->value += "\n" + strip_inline_comment(line);
      continue;
    }
    if (line[0] == '[') {
      size_t close = line.find(']');
      if (close == std::string::npos)
        config_error(path, ":", lineno, ": section header '", line, "' has no closing ']'; expected [layername].");
      std::string rest = strip(line.substr(close + 1));
      if (!rest.empty() && rest[0] != '#' && rest[0] != ';')
        config_error(path, ":", lineno, ": unexpected text '", rest, "' after section header ", line.substr(0, close + 1), ".");
      std::string name = strip(line.substr(1, close - 1));
      if (name.empty()) config_error(path, ":", lineno, ": empty section name '[]'; expected [layername].");
      for (const auto& s : cf.sections)
        if (s.name == name)
          config_error(path, ":", lineno, ": section [", name, "] appears twice (first at line ", s.line,
                       "); each layer needs one section.");
      cf.sections.push_back(Section{name, lineno, {}});
      cur = &cf.sections.back();
      last = nullptr;
      continue;
    }
    size_t eq = line.find_first_of("=:");
    if (eq == std::string::npos)
      config_error(path, ":", lineno, cur ? cat(": in section [", cur->name, "]") : std::string(),
                   ": cannot read '", line, "'; expected key=value.");
    if (!cur)
      config_error(path, ":", lineno, ": '", line, "' comes before any [section]; every key belongs to a layer section.");
    Entry e;
    e.key = strip(line.substr(0, eq));
    e.lkey = to_lower(e.key);
    e.value = strip_inline_comment(strip(line.substr(eq + 1)));
    e.line = lineno;
    if (e.key.empty())
      config_error(path, ":", lineno, ": in section [", cur->name, "]: missing key before '", line[eq], "'.");
    for (const auto& o : cur->entries)
      if (o.lkey == e.lkey)
        config_error(path, ":", lineno, ": in section [", cur->name, "], key '", e.key, "' is given twice (first at line ",
                     o.line, ").");
    cur->entries.push_back(e);
    last = &cur->entries.back();
  }
  return cf;
}

ConfigFile parse_config_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) input_error(path, ": cannot open this file (it does not exist or is not readable).");
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_config_text(ss.str(), path);
}

}  // namespace ccn
