// ccn/native/netdef/spec.cpp: typed key access with precise errors (see spec.h).
#include "netdef/spec.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "core/error.h"

namespace ccn {

double Schedule::value(double progress) const {
  if (type == "const") return base;
  if (type == "linear") return base * (1 - progress) + (base / tgt_factor) * progress;
  if (type == "exp") return base * std::pow(1.0 / tgt_factor, progress);
  // dexp: num_steps plateaus, the first num_steps-1 sampled from exp, the last at base/tgt.
  std::vector<double> rates;
  for (int i = 0; i < num_steps - 1; ++i)
    rates.push_back(base * std::pow(1.0 / tgt_factor, double(i) / (num_steps - 1)));
  rates.push_back(base / tgt_factor);
  for (size_t i = 0; i < rates.size(); ++i)
    if (progress <= double(i + 1) / rates.size()) return rates[i];
  return rates.back();
}

std::string Schedule::str() const {
  std::ostringstream os;
  if (type == "const") {
    os << base;
  } else {
    os << type << "[base=" << base << ";tgtFactor=" << tgt_factor;
    if (type == "dexp") os << ";numSteps=" << num_steps;
    os << "]";
  }
  return os.str();
}

std::string NeuronSpec::str() const {
  std::ostringstream os;
  os << type;
  if (!args.empty()) {
    os << "[";
    for (size_t i = 0; i < args.size(); ++i) os << (i ? "," : "") << args[i];
    os << "]";
  }
  return os.str();
}

LayerSpec::LayerSpec(const ConfigFile* def_file, const Section* def, const ConfigFile* par_file, const Section* par)
    : def_file_(def_file), def_(def), par_file_(par_file), par_(par) {
  known_def_["type"] = "type";
}

std::string LayerSpec::type() const {
  const Entry* e = def_->find("type");
  return e ? e->value : std::string();
}

const Entry* LayerSpec::entry(const std::string& key, Src src) const {
  const Section* s = src == Src::Def ? def_ : par_;
  return s ? s->find(key) : nullptr;
}

bool LayerSpec::has(const std::string& key, Src src) const { return entry(key, src) != nullptr; }

void LayerSpec::allow(const std::string& key, Src src) {
  (src == Src::Def ? known_def_ : known_par_)[to_lower(key)] = key;
}

std::string LayerSpec::where(const std::string& key, Src src) const {
  const ConfigFile* f = src == Src::Def ? def_file_ : par_file_;
  const Section* s = src == Src::Def ? def_ : par_;
  const Entry* e = entry(key, src);
  if (!f) return cat("(no layer-params file): in section [", def_->name, "]");
  int line = e ? e->line : (s ? s->line : 0);
  return cat(f->path, ":", line, ": in section [", def_->name, "]");
}

void LayerSpec::fail(const std::string& key, const std::string& msg, Src src) const {
  config_error(where(key, src), ", key '", key, "': ", msg);
}

void LayerSpec::fail_layer(const std::string& msg) const {
  config_error(def_file_->path, ":", def_->line, ": layer '", def_->name, "' (type=", type(), "): ", msg);
}

void LayerSpec::bad(const std::string& key, Src src, const std::string& found, const std::string& expected,
                    const std::string& hint) const {
  config_error(where(key, src), ", key '", key, "': expected ", expected, ", found '", found, "'.",
               hint.empty() ? "" : " ", hint);
}

std::string LayerSpec::get_str(const std::string& key, std::optional<std::string> dflt, Src src) {
  allow(key, src);
  const Entry* e = entry(key, src);
  if (e) return e->value;
  if (dflt) return *dflt;
  if (src == Src::Params && !par_)
    config_error((par_file_ ? par_file_->path : std::string("the layer-params file")), ": layer '", def_->name,
                 "' (type=", type(), ") needs a [", def_->name, "] section with key '", key, "'.");
  config_error(where(key, src), ": missing required key '", key, "'",
               src == Src::Params ? " (in the layer-params file)." : ".");
}

int LayerSpec::parse_int(const std::string& key, Src src, const std::string& v) const {
  errno = 0;
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != 0) bad(key, src, v, "an integer");
  if (errno || x > 1000000000L || x < -1000000000L)
    bad(key, src, v, "an integer between -1000000000 and 1000000000", "That one is out of range.");
  return (int)x;
}

double LayerSpec::parse_float(const std::string& key, Src src, const std::string& v) const {
  errno = 0;
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != 0) bad(key, src, v, "a number");
  if (!std::isfinite(x) || (errno == ERANGE && std::fabs(x) >= 1))
    bad(key, src, v, "a finite number", "That one is infinite, not a number, or too large for a double.");
  if (errno == ERANGE)
    bad(key, src, v, "a number", "That one is too small for a double to tell from 0; write 0 if 0 is meant.");
  return x;
}

int LayerSpec::get_int(const std::string& key, std::optional<int> dflt, Src src) {
  allow(key, src);
  const Entry* e = entry(key, src);
  if (!e && dflt) return *dflt;
  return parse_int(key, src, get_str(key, {}, src));
}

double LayerSpec::get_float(const std::string& key, std::optional<double> dflt, Src src) {
  allow(key, src);
  const Entry* e = entry(key, src);
  if (!e && dflt) return *dflt;
  return parse_float(key, src, get_str(key, {}, src));
}

bool LayerSpec::get_bool(const std::string& key, std::optional<bool> dflt, Src src) {
  allow(key, src);
  const Entry* e = entry(key, src);
  if (!e && dflt) return *dflt;
  std::string v = to_lower(get_str(key, {}, src));
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  bad(key, src, v, "a boolean (0, 1, true or false)");
}

std::vector<std::string> LayerSpec::get_str_list(const std::string& key, int n, std::optional<std::string> dflt, Src src) {
  allow(key, src);
  const Entry* e = entry(key, src);
  if (!e && dflt) return std::vector<std::string>(n, *dflt);
  std::string v = get_str(key, {}, src);
  std::vector<std::string> parts = split(v, ',');
  if ((int)parts.size() == 1 && n > 1) return std::vector<std::string>(n, parts[0]);
  if ((int)parts.size() != n)
    bad(key, src, v, cat(n, " comma-separated value", n == 1 ? "" : "s", " (one per input)"));
  return parts;
}

std::vector<int> LayerSpec::get_int_list(const std::string& key, int n, std::optional<int> dflt, Src src) {
  std::vector<int> out;
  const Entry* e = entry(key, src);
  for (const auto& s : get_str_list(key, n, dflt ? std::optional<std::string>(std::to_string(*dflt)) : std::nullopt, src))
    out.push_back(parse_int(key, src, s.empty() && !e ? std::string() : s));
  return out;
}

std::vector<double> LayerSpec::get_float_list(const std::string& key, int n, std::optional<double> dflt, Src src) {
  std::vector<double> out;
  std::optional<std::string> d;
  if (dflt) {
    std::ostringstream os;
    os.precision(17);
    os << *dflt;
    d = os.str();
  }
  for (const auto& s : get_str_list(key, n, d, src)) out.push_back(parse_float(key, src, s));
  return out;
}

Schedule LayerSpec::parse_schedule(const std::string& key, Src src, const std::string& v) const {
  // cuda-convnet2 matches schedule and parameter names case-insensitively; so do we.
  Schedule s;
  size_t lb = v.find('[');
  if (lb == std::string::npos) {
    s.base = parse_float(key, src, v);
    return s;
  }
  const std::string expected =
      "a number or a schedule such as dexp[base=0.01;tgtFactor=250;numSteps=4] (types: const, linear, exp, dexp)";
  if (v.back() != ']' || v.find('[', lb + 1) != std::string::npos || v.find(']') != v.size() - 1)
    bad(key, src, v, expected);
  s.type = to_lower(strip(v.substr(0, lb)));
  if (s.type != "const" && s.type != "linear" && s.type != "exp" && s.type != "dexp") {
    std::string m = did_you_mean(s.type, {"const", "linear", "exp", "dexp"});
    bad(key, src, v, expected, m.empty() ? "" : "Did you mean '" + m + "'?");
  }
  std::vector<std::string> need = {"base"};
  if (s.type != "const") need.push_back("tgtFactor");
  if (s.type == "dexp") need.push_back("numSteps");
  const std::string form = s.type == "const"    ? "const[base=B]"
                           : s.type == "dexp" ? "dexp[base=B;tgtFactor=F;numSteps=N]"
                                              : s.type + "[base=B;tgtFactor=F]";
  std::map<std::string, std::string> kv;  // canonical name -> value
  for (const auto& part : split(v.substr(lb + 1, v.size() - lb - 2), ';')) {
    if (part.empty()) continue;
    size_t eq = part.find('=');
    if (eq == std::string::npos) bad(key, src, v, form, cat("'", part, "' is not name=value."));
    std::string k = strip(part.substr(0, eq));
    std::string canon;
    for (const auto& nk : need)
      if (to_lower(nk) == to_lower(k)) canon = nk;
    if (canon.empty()) {
      std::string m = did_you_mean(k, need);
      bad(key, src, v, form, cat("'", k, "' is not a parameter of ", s.type, "[...]",
                                 m.empty() ? "." : cat("; did you mean '", m, "'?")));
    }
    if (kv.count(canon)) bad(key, src, v, form, cat("'", canon, "' is given twice."));
    kv[canon] = strip(part.substr(eq + 1));
  }
  for (const auto& nk : need)
    if (!kv.count(nk)) bad(key, src, v, form, cat("'", nk, "' is missing."));
  s.base = parse_float(key, src, kv["base"]);
  if (kv.count("tgtFactor")) {
    s.tgt_factor = parse_float(key, src, kv["tgtFactor"]);
    if (s.tgt_factor <= 0) bad(key, src, v, form, "tgtFactor must be positive.");
  }
  if (kv.count("numSteps")) {
    s.num_steps = parse_int(key, src, kv["numSteps"]);
    if (s.num_steps < 1) bad(key, src, v, form, "numSteps must be at least 1.");
  }
  return s;
}

std::vector<Schedule> LayerSpec::get_schedule_list(const std::string& key, int n, std::optional<double> dflt, Src src) {
  std::vector<Schedule> out;
  std::optional<std::string> d;
  if (dflt) {
    std::ostringstream os;
    os.precision(17);
    os << *dflt;
    d = os.str();
  }
  // Schedules contain no commas (their parameters are separated by ';'), so the comma split of
  // get_str_list is safe; a comma inside [...] is the likely slip of writing them like a neuron's.
  if (const Entry* e = entry(key, src)) {
    std::string fixed = e->value;
    int depth = 0;
    bool inside = false;
    for (char& c : fixed) {
      depth += c == '[' ? 1 : c == ']' ? -1 : 0;
      if (c == ',' && depth > 0) c = ';', inside = true;
    }
    if (inside)
      bad(key, src, e->value, cat("a number or a schedule such as ", fixed),
          "The parameters of a schedule are separated by ';' (commas separate the values of different inputs).");
  }
  for (const auto& s : get_str_list(key, n, d, src)) out.push_back(parse_schedule(key, src, s));
  return out;
}

NeuronSpec LayerSpec::get_neuron(const std::string& key, std::optional<std::string> dflt) {
  std::string v = get_str(key, dflt, Src::Def);
  const std::string form = "a neuron such as relu or tanh[1.7,0.66]";
  NeuronSpec ns;
  size_t lb = v.find('[');
  ns.type = strip(lb == std::string::npos ? v : v.substr(0, lb));
  if (ns.type.empty()) bad(key, Src::Def, v, form);
  if (lb != std::string::npos) {
    if (v.back() != ']' || v.find('[', lb + 1) != std::string::npos || v.find(']') != v.size() - 1)
      bad(key, Src::Def, v, form);
    for (const auto& a : split(v.substr(lb + 1, v.size() - lb - 2), ',')) {
      errno = 0;
      char* end = nullptr;
      double x = std::strtod(a.c_str(), &end);
      if (a.empty() || *end != 0 || errno || !std::isfinite(x))
        bad(key, Src::Def, v, form, a.empty() ? std::string("A parameter is empty.") : cat("'", a, "' is not a number."));
      ns.args.push_back(x);
    }
  }
  return ns;
}

void LayerSpec::finish() const {
  auto check = [&](const Section* s, const std::map<std::string, std::string>& known, Src src) {
    if (!s) return;
    std::vector<std::string> cands;
    for (const auto& kv : known) cands.push_back(kv.second);
    for (const auto& e : s->entries) {
      if (known.count(e.lkey)) continue;
      std::string m = did_you_mean(e.key, cands);
      const auto& other = src == Src::Def ? known_par_ : known_def_;
      std::string hint;
      if (other.count(e.lkey))
        hint = src == Src::Def ? " It belongs in the layer-params file." : " It belongs in the layer-definition file.";
      else if (!m.empty())
        hint = cat(" Did you mean '", m, "'?");
      const ConfigFile* f = src == Src::Def ? def_file_ : par_file_;
      config_error(f ? f->path : std::string("<layer-params>"), ":", e.line, ": in section [", def_->name, "], key '",
                   e.key, "': not a key of layer type '", type(), "'.", hint);
    }
  };
  check(def_, known_def_, Src::Def);
  check(par_, known_par_, Src::Params);
}

}  // namespace ccn
