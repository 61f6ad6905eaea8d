// ccn/native/netdef/spec.h: typed, checked access to one layer's keys.
//
// A LayerSpec joins a layer's section in the layer-definition file with its section in the
// layer-params file. Layers ask for keys by type (int, float, bool, lists, neuron, schedule);
// every bad value becomes an error naming file, line, section, key, the value found and the
// form expected. After a layer is set up, finish() rejects keys nobody asked for, with a
// did-you-mean among the keys the layer type does read.
#pragma once
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "netdef/config.h"

namespace ccn {

enum class Src { Def, Params };

// A learning-rate schedule: const / linear / exp / dexp (cudaconvnet/src/lr.cu).
struct Schedule {
  std::string type = "const";
  double base = 0, tgt_factor = 1;
  int num_steps = 1;
  double value(double progress) const;
  std::string str() const;
};

// A neuron: name and positional parameters, e.g. tanh[1.7,0.66] -> {"tanh", {1.7, 0.66}}.
struct NeuronSpec {
  std::string type = "ident";
  std::vector<double> args;
  std::string str() const;
};

class LayerSpec {
 public:
  LayerSpec(const ConfigFile* def_file, const Section* def, const ConfigFile* par_file, const Section* par);

  const std::string& name() const { return def_->name; }
  std::string type() const;
  bool has(const std::string& key, Src src = Src::Def) const;
  // Marks a key as known to this layer type (for did-you-mean) without reading it.
  void allow(const std::string& key, Src src = Src::Def);

  std::string get_str(const std::string& key, std::optional<std::string> dflt = {}, Src src = Src::Def);
  int get_int(const std::string& key, std::optional<int> dflt = {}, Src src = Src::Def);
  double get_float(const std::string& key, std::optional<double> dflt = {}, Src src = Src::Def);
  bool get_bool(const std::string& key, std::optional<bool> dflt = {}, Src src = Src::Def);
  // Comma lists, one value per input; a single value is repeated to n entries. Empty entries
  // are returned as "" by get_str_list and rejected by the numeric ones.
  std::vector<std::string> get_str_list(const std::string& key, int n, std::optional<std::string> dflt = {}, Src src = Src::Def);
  std::vector<int> get_int_list(const std::string& key, int n, std::optional<int> dflt = {}, Src src = Src::Def);
  std::vector<double> get_float_list(const std::string& key, int n, std::optional<double> dflt = {}, Src src = Src::Def);
  std::vector<Schedule> get_schedule_list(const std::string& key, int n, std::optional<double> dflt = {}, Src src = Src::Params);
  NeuronSpec get_neuron(const std::string& key, std::optional<std::string> dflt = {});

  // Errors that point at this layer (and at a key's line when given).
  [[noreturn]] void fail(const std::string& key, const std::string& msg, Src src = Src::Def) const;
  [[noreturn]] void fail_layer(const std::string& msg) const;
  // Reject unknown keys. Called by the net after the layer's setup.
  void finish() const;

  const Section* def_section() const { return def_; }
  bool params_given() const { return par_file_ != nullptr; }

 private:
  const Entry* entry(const std::string& key, Src src) const;
  std::string where(const std::string& key, Src src) const;
  [[noreturn]] void bad(const std::string& key, Src src, const std::string& found, const std::string& expected,
                        const std::string& hint = "") const;
  double parse_float(const std::string& key, Src src, const std::string& v) const;
  int parse_int(const std::string& key, Src src, const std::string& v) const;
  Schedule parse_schedule(const std::string& key, Src src, const std::string& v) const;

  const ConfigFile* def_file_;
  const Section* def_;
  const ConfigFile* par_file_;
  const Section* par_;
  std::map<std::string, std::string> known_def_, known_par_;  // lower-cased key -> spelling
};

}  // namespace ccn
