// ccn/native/python/bindings.cpp: the pybind11 module ccn._core. Bindings only: no logic.
// Arrays cross as float32 NumPy copies; long native calls release the GIL.
#include "core/omp.h"
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "core/blas.h"
#include "core/error.h"
#include "core/simd.h"
#include "kernels/unfold.h"
#include "kernels/directconv.h"
#include "net/net.h"
#ifdef CCN_WITH_CUDA
#include "cuda/cublas.h"
#include "cuda/cuda_info.h"
#include "cuda/testing_ops.h"
#endif

namespace py = pybind11;
using namespace ccn;

#ifndef CCN_VERSION
#define CCN_VERSION "dev"
#endif

namespace {

using FArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// obj as a C-contiguous float32 array (converted when it is not one), checked for a matrix.
FArray float_array(const py::handle& obj, const std::string& what) {
  FArray a = FArray::ensure(obj);
  if (!a) input_error(what, ": expected a numeric array.");
  if (a.ndim() < 1) input_error(what, ": expected an array with at least one dimension, got a scalar.");
  return a;
}

// A read-only rows x (the other dimensions) view of a's memory; a must outlive it.
Mat view_of(const FArray& a) {
  int64_t cols = 1;
  for (py::ssize_t d = 1; d < a.ndim(); ++d) cols *= a.shape(d);
  return Mat::borrow(a.data(), a.shape(0), cols);
}

Mat to_mat(const py::handle& obj, const std::string& what) {  // a copy the core may keep and write
  FArray a = float_array(obj, what);
  Mat m;
  m.copy_from(view_of(a));
  return m;
}

py::array_t<float> to_array(const Mat& m) {
  py::array_t<float> a({m.rows(), m.cols()});
  if (m.size()) std::memcpy(a.mutable_data(), m.data(), (size_t)m.size() * sizeof(float));
  return a;
}

// A minibatch (list of arrays, None where a dataIdx is not given) as read-only views of the
// arrays' memory, without a copy: a 128-image AlexNet minibatch is 77 MB, and allocating and
// filling a fresh copy each step cost more than the H100 step itself (tools/perf-notes.md,
// gpu-1). Arrays that are not C-contiguous float32 are converted once, and `keep` holds
// them. Construct it while holding the GIL and let it die after the GIL is taken back.
struct Minibatch {
  std::vector<FArray> keep;
  std::vector<Mat> mats;
  std::vector<const Mat*> ptrs;  // null where the list holds None
  explicit Minibatch(const py::list& data) {
    mats.reserve(data.size());
    for (size_t i = 0; i < data.size(); ++i) {
      if (data[i].is_none()) {
        mats.emplace_back();
        continue;
      }
      keep.push_back(float_array(data[i], cat("data matrix ", i)));
      mats.push_back(view_of(keep.back()));
    }
    for (size_t i = 0; i < mats.size(); ++i) ptrs.push_back(data[i].is_none() ? nullptr : &mats[i]);
  }
};

Mat& param_mat(Net& net, const std::string& name, const std::string& which) {
  Param* p = net.find_param(name);
  if (!p) input_error("no parameter named '", name, "'.");
  if (which == "w") return p->w;
  if (which == "grad") return p->grad_written = true, p->grad;
  if (which == "inc") return p->inc;
  input_error("unknown parameter field '", which, "' (expected w, grad or inc).");
}

int param_part(const std::string& which) {  // Net::ParamPart of a field name checked by param_mat
  return which == "w" ? Net::kW : which == "grad" ? Net::kGrad : Net::kInc;
}

py::list costs_list(const Net& net) {
  py::list out;
  for (const auto& c : net.costs()) {
    py::dict d;
    d["layer"] = c.layer;
    d["names"] = c.names;
    d["values"] = c.values;
    d["coeff"] = c.coeff;
    out.append(d);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "ccn native core (private; use the ccn package)";

  py::module_ errors = py::module_::import("ccn.errors");
  static py::object config_error_cls = errors.attr("ConfigError");
  static py::object input_error_cls = errors.attr("InputError");
  static py::object runtime_error_cls = errors.attr("CcnRuntimeError");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ccn::Error& e) {
      py::object cls = e.kind() == ErrorKind::Config  ? config_error_cls
                       : e.kind() == ErrorKind::Input ? input_error_cls
                                                      : runtime_error_cls;
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const std::bad_alloc&) {
      PyErr_SetString(runtime_error_cls.ptr(), "out of memory in the ccn core.");
    }
  });

  m.def("version", [] { return std::string(CCN_VERSION); });
  m.def("build_info", [] {
    py::dict d;
    d["version"] = CCN_VERSION;
    py::list backends;
    backends.append("cpu");
#ifdef CCN_WITH_CUDA
    backends.append("cuda");
#endif
    d["backends"] = backends;
    d["blas"] = blas_name();
    d["blas_config"] = blas_config();
    d["blas_threads"] = blas_threads();
    d["omp_threads"] = omp_get_max_threads();
    d["openmp"] = have_openmp();
    d["gemm_threads"] = gemm_threads();
    // Convolution kernels this build can run here (native/kernels/directconv.h): "gemm"
    // always; "direct-avx512" when the CPU has AVX-512F. CCN_CONV_KERNEL picks per layer.
    py::list conv_kernels;
    conv_kernels.append("gemm");
    if (direct_conv_available()) conv_kernels.append("direct-avx512");
    d["conv_kernels"] = conv_kernels;
#ifdef __VERSION__
    d["compiler"] = __VERSION__;
#endif
    return d;
  });
  // The instruction-set path of core/simd.h's kernels in use (CCN_SIMD overrides; read once).
  m.def("simd_path", [] { return std::string(ccn::simd::k().name); });
  // The paths CCN_SIMD may name on this CPU (ccn.cli checks the variable against them).
  m.def("simd_paths", [] {
    std::vector<std::string> out;
    for (const char* p : {"portable", "avx2", "avx512"})
      if (ccn::simd::path_kernels(p)) out.push_back(p);
    return out;
  });
  // How many conv passes each kernel made since the last reset (tests check which one ran).
  m.def("conv_kernel_counts", [] {
    py::dict d;
    d["gemm_fprop"] = conv_kernel_count(kGemmFprop);
    d["gemm_bprop"] = conv_kernel_count(kGemmBprop);
    d["direct_fprop"] = conv_kernel_count(kDirectFprop);
    d["direct_bprop"] = conv_kernel_count(kDirectBprop);
    return d;
  });
  m.def("reset_conv_kernel_counts", [] { reset_conv_kernel_counts(); });
  m.def("set_threads", [](int n) {
    if (n < 1) input_error("the thread count must be at least 1, got ", n, ".");
    set_threads(n);  // OpenMP's (sgemm splits over them), or the BLAS's in a build without OpenMP
  });
  m.def("layer_types", [] {
    std::vector<std::string> t;
    for (const auto& kv : layer_registry()) t.push_back(kv.first);
    return t;
  });
  m.def("cuda_devices", [] {
    py::list out;
#ifdef CCN_WITH_CUDA
    for (const auto& g : cuda_devices()) {
      py::dict d;
      d["index"] = g.index;
      d["name"] = g.name;
      d["memory_bytes"] = g.memory_bytes;
      d["compute_capability"] = py::make_tuple(g.major, g.minor);
      out.append(d);
    }
#endif
    return out;
  });
  // kernels/unfold.h: the unfold budget in bytes (CCN_UNFOLD_BYTES, else `default_bytes`).
  m.def("unfold_budget_bytes", &unfold_budget_bytes, py::arg("default_bytes"));
  m.def("cuda_mem_info", [](int gpu) -> py::object {  // (free, total) bytes of GPU gpu, or None
#ifdef CCN_WITH_CUDA
    size_t f = 0, t = 0;
    if (cuda_mem_info(gpu, &f, &t)) return py::make_tuple(f, t);
#endif
    return py::none();
  }, py::arg("gpu"));
  m.def("cublas_status", [] {
#ifdef CCN_WITH_CUDA
    return cuda::cublas_describe();
#else
    return std::string("not compiled in");
#endif
  });
  m.def("cublas_add_search_dir", [](const std::string& dir) {
#ifdef CCN_WITH_CUDA
    cuda::cublas_add_search_dir(dir);
#endif
  });
  // Tests only: run one CUDA kernel launcher on NumPy arrays (native/cuda/testing_ops.cu).
  m.def("cuda_test_op", [](const std::string& op, const py::dict& arrays, const std::map<std::string, double>& scalars,
                           int gpu) {
    py::dict out;
#ifdef CCN_WITH_CUDA
    std::map<std::string, Mat> mats;
    std::map<std::string, std::vector<py::ssize_t>> shapes;
    for (auto kv : arrays) {
      std::string k = py::cast<std::string>(kv.first);
      mats[k] = to_mat(kv.second, "array '" + k + "'");
      FArray a = FArray::ensure(kv.second);
      shapes[k] = std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
    }
    {
      py::gil_scoped_release nogil;
      cuda::run_test_op(op, mats, scalars, gpu);
    }
    for (auto& kv : mats) out[py::str(kv.first)] = to_array(kv.second).reshape(shapes[kv.first]);
#else
    runtime_error("this ccn was built without the CUDA backend.");
#endif
    return out;
  }, py::arg("op"), py::arg("arrays"), py::arg("scalars"), py::arg("gpu") = 0);
  m.def("cuda_status", [] {
#ifdef CCN_WITH_CUDA
    return cuda_status();
#else
    return std::string("not compiled in");
#endif
  });

  // The layer-file reader on its own: [(section, line, [(key, value, line), ...]), ...]. Used by
  // show-net to read a file's data layers before building it, and by the dialect tests.
  m.def("parse_config", [](const std::string& text, const std::string& path) {
    ConfigFile cf = parse_config_text(text, path);
    py::list out;
    for (const auto& s : cf.sections) {
      py::list entries;
      for (const auto& e : s.entries) entries.append(py::make_tuple(e.key, e.value, e.line));
      out.append(py::make_tuple(s.name, s.line, entries));
    }
    return out;
  });
  // One typed key of one section, read as a layer would (for the dialect tests). kind: str, int,
  // float, bool, str_list, int_list, float_list, schedule (its canonical text), neuron (its text).
  m.def("netdef_get", [](const std::string& text, const std::string& path, const std::string& section,
                         const std::string& key, const std::string& kind, int n, bool in_params) -> py::object {
    ConfigFile cf = parse_config_text(text, path);
    const Section* sec = cf.find(section);
    if (!sec) input_error("no section [", section, "] in ", path, ".");
    ConfigFile empty;
    Section none{section, 0, {}};
    LayerSpec spec(in_params ? &empty : &cf, in_params ? &none : sec, in_params ? &cf : nullptr,
                   in_params ? sec : nullptr);
    Src src = in_params ? Src::Params : Src::Def;
    if (kind == "str") return py::str(spec.get_str(key, {}, src));
    if (kind == "int") return py::int_(spec.get_int(key, {}, src));
    if (kind == "float") return py::float_(spec.get_float(key, {}, src));
    if (kind == "bool") return py::bool_(spec.get_bool(key, {}, src));
    if (kind == "str_list") return py::cast(spec.get_str_list(key, n, {}, src));
    if (kind == "int_list") return py::cast(spec.get_int_list(key, n, {}, src));
    if (kind == "float_list") return py::cast(spec.get_float_list(key, n, {}, src));
    if (kind == "schedule") {
      py::list out;
      for (const auto& sc : spec.get_schedule_list(key, n, {}, src)) out.append(sc.str());
      return out;
    }
    if (kind == "neuron") return py::str(spec.get_neuron(key).str());
    input_error("netdef_get: unknown kind '", kind, "'.");
  }, py::arg("text"), py::arg("path"), py::arg("section"), py::arg("key"), py::arg("kind"), py::arg("n") = 1,
     py::arg("in_params") = false);

  py::class_<Net>(m, "Net")
      .def(py::init([](const std::string& def_text, const std::string& def_path, const std::string& params_text,
                       const std::string& params_path, const std::map<int, std::tuple<int, int, int>>& dims,
                       bool allow_unused) {
             std::map<int, Shape> dd;
             for (const auto& [k, v] : dims) dd[k] = Shape{std::get<0>(v), std::get<1>(v), std::get<2>(v)};
             return std::make_unique<Net>(def_text, def_path, params_text, params_path, dd, allow_unused);
           }),
           py::arg("def_text"), py::arg("def_path"), py::arg("params_text"), py::arg("params_path"), py::arg("data_dims"),
           py::arg("allow_unused") = false)
      .def("layers",
           [](const Net& net) {
             py::list out;
             for (const auto& l : net.layers()) {
               py::dict d;
               d["name"] = l->name;
               d["type"] = l->type;
               std::vector<std::string> ins;
               for (auto* i : l->inputs) ins.push_back(i->name);
               d["inputs"] = ins;
               d["shape"] = py::make_tuple(l->out.c, l->out.h, l->out.w);
               std::vector<std::string> ps;
               for (auto* p : l->weights) ps.push_back(p->name);
               d["weights"] = ps;
               d["biases"] = l->biases ? py::object(py::str(l->biases->name)) : py::object(py::none());
               d["flops_per_case"] = l->flops_per_case();
               d["neuron"] = l->has_neuron ? l->neuron.str() : std::string();
               d["is_cost"] = l->is_cost();
               d["data_idx"] = l->data_idx();
               d["keeps_pre"] = net.keeps_pre(l->id);
               d["device_keeps_pre"] = net.device_keeps_pre(l->id);
               const Layer* logits = net.fused_logits(l->id);
               d["fused_logits"] = logits ? py::object(py::str(logits->name)) : py::object(py::none());
               const Layer* into = net.fused_into(l->id);
               d["fused_into"] = into ? py::object(py::str(into->name)) : py::object(py::none());
               out.append(d);
             }
             return out;
           })
      .def("params",
           [](const Net& net) {
             py::list out;
             for (const auto& p : net.params()) {
               py::dict d;
               d["name"] = p->name;
               d["layer"] = p->layer;
               d["shape"] = py::make_tuple(p->w.rows(), p->w.cols());
               d["is_bias"] = p->is_bias;
               d["init_std"] = p->init_std;
               d["init_value"] = p->init_value;
               d["init_func"] = p->init_func;
               d["eps"] = p->eps.str();
               d["eps_base"] = p->eps.base;  // 0: the matrix is frozen (Param::begin_update)
               d["mom"] = p->mom;
               d["wc"] = p->wc;
               d["wball"] = p->wball;
               d["update_period"] = p->update_period;
               d["shared_by"] = p->shared_by;
               d["passes"] = p->passes;
               out.append(d);
             }
             return out;
           })
      .def("eps", [](const Net& net, const std::string& name, double progress) {
        Param* p = net.find_param(name);
        if (!p) input_error("no parameter named '", name, "'.");
        return p->eps.value(progress);
      })
      .def("get",
           [](Net& net, const std::string& name, const std::string& which) {
             Mat& m = param_mat(net, name, which);
             // On a GPU the device copy is the current one: bring this matrix (only) back first.
             if (net.on_device()) net.pull_params(net.find_param(name), param_part(which));
             return to_array(m);
           },
           py::arg("name"), py::arg("which") = "w")
      .def("set",
           [](Net& net, const std::string& name, const py::handle& arr, const std::string& which) {
             Mat& dst = param_mat(net, name, which);
             Mat src = to_mat(arr, "parameter '" + name + "'");
             if (src.size() != dst.size())
               input_error("parameter '", name, "' is ", dst.rows(), "x", dst.cols(), " but the array given has ",
                           src.size(), " values.");
             Param* p = net.find_param(name);
             if (net.on_device()) {
               // The device holds the current w, grad and inc; the host Mats may be stale. Pull
               // this parameter's other two matrices first so the host mirror is whole, write
               // the one matrix, then push that one only: the device's other two stay as they
               // were (pushing all three used to overwrite them with stale host values).
               net.pull_params(p, Net::kAllParts & ~param_part(which));
               std::memcpy(dst.data(), src.data(), (size_t)src.size() * sizeof(float));
               net.push_params(p, param_part(which));
             } else {
               std::memcpy(dst.data(), src.data(), (size_t)src.size() * sizeof(float));
             }
           },
           py::arg("name"), py::arg("array"), py::arg("which") = "w")
      .def("set_passes", [](Net& net, const std::string& name, int passes) {
        Param* p = net.find_param(name);
        if (!p) input_error("no parameter named '", name, "'.");
        p->passes = passes;
      })
      .def("fprop",
           [](Net& net, const py::list& data, bool train) {
             Minibatch mb(data);
             py::gil_scoped_release nogil;
             net.fprop(mb.ptrs, train);
           },
           py::arg("data"), py::arg("train") = false)
      .def("bprop",
           [](Net& net, const py::dict& seeds) {
             std::map<std::string, Mat> mats;
             for (auto kv : seeds) {
               std::string k = py::cast<std::string>(kv.first);
               mats[k] = to_mat(kv.second, "gradient for layer '" + k + "'");
             }
             std::map<std::string, const Mat*> p;
             for (auto& kv : mats) p[kv.first] = &kv.second;
             py::gil_scoped_release nogil;
             net.bprop(p);
           },
           py::arg("seeds") = py::dict())
      .def("update",
           [](Net& net, double progress, int minibatch) {
             py::gil_scoped_release nogil;
             net.update(progress, minibatch);
           },
           py::arg("progress"), py::arg("minibatch"))
      .def("train_step",
           [](Net& net, const py::list& data, double progress, int minibatch) {
             Minibatch mb(data);
             {
               py::gil_scoped_release nogil;
               net.fprop(mb.ptrs, true);
               net.bprop();
               net.update(progress, minibatch);
               net.step++;
             }
             return costs_list(net);
           },
           py::arg("data"), py::arg("progress"), py::arg("minibatch"))
      .def("zero_param_grads", &Net::zero_param_grads)
      .def("to_device",
           [](Net& net, int gpu) {
             py::gil_scoped_release nogil;
             net.to_device(gpu);
           },
           py::arg("gpu") = 0)
      .def("to_host", [](Net& net) {
        py::gil_scoped_release nogil;
        net.to_host();
      })
      .def_property_readonly("on_device", &Net::on_device)
      .def_property_readonly("device", &Net::device)
      .def_property_readonly("device_bytes", &Net::device_bytes)
      .def("pull_params", [](Net& net) {
        py::gil_scoped_release nogil;
        net.pull_params();
      })
      .def("prefetch",
           [](Net& net, const py::list& data) {
             Minibatch mb(data);
             py::gil_scoped_release nogil;
             net.prefetch(mb.ptrs);
           },
           py::arg("data"))
      .def("costs", [](const Net& net) { return costs_list(net); })
      .def("output", [](const Net& net, const std::string& name) { return to_array(net.output(name)); })
      .def("output_grad", [](const Net& net, const std::string& name) { return to_array(net.output_grad(name)); })
      .def("first_nonfinite_layer", &Net::first_nonfinite_layer)
      .def("reload_params", &Net::reload_params, py::arg("params_text"), py::arg("params_path"))
      .def("set_data_grads", &Net::set_data_grads)
      .def("set_skip_frozen", &Net::set_skip_frozen)
      .def("set_grad_zero_eager", &Net::set_grad_zero_eager)
      .def("grad_zero_eager", &Net::grad_zero_eager)
      .def("layer_times",
           [](const Net& net) {  // [(layer, forward s, backward s)] summed since the last reset
             py::list out;
             for (size_t i = 0; i < net.layers().size(); ++i)
               out.append(py::make_tuple(net.layers()[i]->name, net.fprop_seconds()[i], net.bprop_seconds()[i]));
             return out;
           })
      .def("reset_layer_times", &Net::reset_layer_times)
      .def_property_readonly("gpus_needed", &Net::gpus_needed)
      .def_property_readonly("num_cases", &Net::num_cases)
      .def_readwrite("seed", &Net::seed)
      .def_readwrite("step", &Net::step)
      .def_readwrite("case_offset", &Net::case_offset)
      // Data parallel (ccn/parallel.py): every parameter's grad, in params() order, as one
      // contiguous float32 vector (weights shared through weightSource appear once).
      .def_property_readonly("grad_size",
                             [](const Net& net) {
                               int64_t n = 0;
                               for (const auto& p : net.params()) n += p->grad.size();
                               return n;
                             })
      .def("read_grads",
           [](Net& net, py::array_t<float, py::array::c_style> out) {
             int64_t n = 0;
             for (const auto& p : net.params()) n += p->grad.size();
             if (out.ndim() != 1 || out.shape(0) != n)
               input_error("read_grads: expected a 1-d float32 array of ", n, " values.");
             if (net.on_device()) net.pull_params(nullptr, Net::kGrad);  // the gradients only
             float* dst = out.mutable_data();
             py::gil_scoped_release nogil;
             for (const auto& p : net.params()) {
               if (p->grad.size()) std::memcpy(dst, p->grad.data(), (size_t)p->grad.size() * sizeof(float));
               dst += p->grad.size();
             }
           },
           py::arg("out"))
      .def("write_grads",
           [](Net& net, py::array_t<float, py::array::c_style> in) {
             int64_t n = 0;
             for (const auto& p : net.params()) n += p->grad.size();
             if (in.ndim() != 1 || in.shape(0) != n)
               input_error("write_grads: expected a 1-d float32 array of ", n, " values.");
             const float* src = in.data();
             {
               py::gil_scoped_release nogil;
               for (const auto& p : net.params()) {
                 if (p->grad.size()) std::memcpy(p->grad.data(), src, (size_t)p->grad.size() * sizeof(float));
                 src += p->grad.size();
                 p->grad_written = true;
               }
             }
             if (net.on_device()) net.push_params(nullptr, Net::kGrad);  // the gradients only
           },
           py::arg("array"))
      // Waits for the GPU to finish this net's queued work (a no-op on the CPU): a train_step
      // returns once its costs are known, while the backward pass and update may still run.
      .def("synchronize", [](Net& net) {
        py::gil_scoped_release nogil;
        net.synchronize();
      });
}
