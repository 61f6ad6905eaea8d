// ccn/native/layers/conv_common.cpp: keys and shape rule of conv and local (see conv_common.h).
#include "layers/conv_common.h"

#include <algorithm>
#include <cstdlib>
#include <numeric>

#include "net/net.h"

namespace ccn {

namespace {

std::string for_input(const SetupCtx& ctx, size_t i) {
  return ctx.in.size() > 1 ? cat(" for input ", i, " ('", ctx.in_names[i], "')") : std::string();
}

uint64_t name_hash(const std::string& s) {  // FNV-1a: stable across platforms and runs
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

// groups * filterChannels / channels random permutations of 0..channels-1, concatenated.
std::vector<int> rand_sparse_table(const std::string& layer, int input, int channels, int groups, int fc) {
  const int over = groups * fc / channels;
  const uint64_t seed = mix64(name_hash(layer) ^ mix64((uint64_t)input + 0x5eed));
  std::vector<int> out;
  uint64_t ctr = 0;
  for (int o = 0; o < over; ++o) {
    std::vector<int> perm(channels);
    std::iota(perm.begin(), perm.end(), 0);
    for (int j = channels - 1; j > 0; --j) {
      int r = (int)(mix64(seed ^ mix64(++ctr)) % (uint64_t)(j + 1));
      std::swap(perm[j], perm[r]);
    }
    out.insert(out.end(), perm.begin(), perm.end());
  }
  return out;
}

bool parse_bool(LayerSpec& spec, const std::string& key, const std::string& v0) {
  std::string v = to_lower(v0);
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  spec.fail(key, cat("expected a boolean (0, 1, true or false) per input, found '", v0, "'."));
}

}  // namespace

ConvSetup parse_conv_setup(LayerSpec& spec, SetupCtx& ctx, const std::string& type) {
  const int n = (int)ctx.in.size();
  if (n == 0) spec.fail("inputs", cat("a ", type, " layer needs at least one input."));
  auto channels = spec.get_int_list("channels", n);
  auto fsize = spec.get_int_list("filterSize", n);
  auto filters = spec.get_int_list("filters", n);
  auto padding = spec.get_int_list("padding", n, 0);
  auto stride = spec.get_int_list("stride", n, 1);
  auto groups = spec.get_int_list("groups", n, 1);
  auto rs_str = spec.get_str_list("randSparse", n, std::string("0"));
  const int modules_x_key = spec.get_int("modulesX", 0);
  // GPU tuning knobs of the original kernels: read (so garbage is caught) and ignored.
  spec.get_int("partialSum", 0);
  spec.get_int("sumWidth", 0);
  if (modules_x_key < 0) spec.fail("modulesX", cat("must be 0 (computed) or positive, found ", modules_x_key, "."));

  std::vector<bool> rs(n);
  bool any_rs = false;
  for (int i = 0; i < n; ++i) any_rs |= (rs[i] = parse_bool(spec, "randSparse", rs_str[i]));
  std::vector<int> fchan;
  const bool have_fc = spec.has("filterChannels");
  if (have_fc) fchan = spec.get_int_list("filterChannels", n);
  else spec.allow("filterChannels");

  ConvSetup cs;
  std::vector<int> mods(n), outf(n);
  for (int i = 0; i < n; ++i) {
    const std::string fi = for_input(ctx, i);
    if (channels[i] < 1) spec.fail("channels", cat("must be a positive integer", fi, ", found ", channels[i], "."));
    const Shape s = image_shape(spec, ctx.in[i], channels[i], ctx.in_names[i]);
    const int S = s.h;
    if (fsize[i] < 1) spec.fail("filterSize", cat("must be at least 1", fi, ", found ", fsize[i], "."));
    if (stride[i] < 1) spec.fail("stride", cat("must be at least 1", fi, ", found ", stride[i], "."));
    if (padding[i] < 0) spec.fail("padding", cat("must be 0 or more", fi, ", found ", padding[i], "."));
    if (groups[i] < 1) spec.fail("groups", cat("must be at least 1", fi, ", found ", groups[i], "."));
    if (filters[i] < 1) spec.fail("filters", cat("must be at least 1", fi, ", found ", filters[i], "."));
    if (stride[i] > fsize[i])
      spec.fail("stride", cat("stride=", stride[i], " is larger than filterSize=", fsize[i], fi,
                              "; the filters would skip pixels, which cuda-convnet does not allow."));
    if (fsize[i] > S + 2 * padding[i])
      spec.fail("filterSize", cat("filterSize=", fsize[i], fi, " is larger than the ", S, "x", S,
                                  " input image plus twice the padding (", S + 2 * padding[i], ")."));
    int fc;
    if (rs[i]) {
      if (groups[i] < 2)
        spec.fail("randSparse", cat("random sparse connectivity", fi, " needs groups of at least 2, found groups=",
                                    groups[i], "."));
      fc = have_fc ? fchan[i] : channels[i] / groups[i];
      if (fc < 1 || fc > channels[i])
        spec.fail(have_fc ? "filterChannels" : "groups",
                  cat("filterChannels", fi, " must be between 1 and channels=", channels[i], ", found ", fc, "."));
      if (channels[i] % fc != 0)
        spec.fail(have_fc ? "filterChannels" : "groups",
                  cat("channels=", channels[i], fi, " is not a multiple of filterChannels=", fc, "."));
      if ((int64_t)groups[i] * fc % channels[i] != 0)
        spec.fail(have_fc ? "filterChannels" : "groups",
                  cat("groups * filterChannels = ", (int64_t)groups[i] * fc, fi,
                      " must be a multiple of channels=", channels[i],
                      " (every channel is used equally often with randSparse)."));
    } else {
      if (channels[i] % groups[i] != 0)
        spec.fail("groups", cat("channels=", channels[i], fi, " cannot be split into groups=", groups[i],
                                " equal blocks (channels must be a multiple of groups)."));
      fc = channels[i] / groups[i];
      if (have_fc && fchan[i] != fc)
        spec.fail("filterChannels", cat("filterChannels=", fchan[i], fi, " differs from channels / groups = ", fc,
                                        "; other values need randSparse=1."));
    }
    int M;
    if (modules_x_key > 0) {
      M = modules_x_key;
      if (-padding[i] + (int64_t)stride[i] * (M - 1) + fsize[i] < S)
        spec.fail("modulesX", cat("a ", M, "x", M, " output with padding=", padding[i], ", stride=", stride[i],
                                  " and filterSize=", fsize[i], fi, " does not cover the ", S, "x", S, " input image."));
    } else {
      M = 1 + (2 * padding[i] + S - fsize[i] + stride[i] - 1) / stride[i];
    }
    mods[i] = M;
    outf[i] = filters[i] * groups[i];

    ConvInputGeom ig;
    ig.groups = groups[i];
    ig.filter_channels = fc;
    ig.g.channels = channels[i];
    ig.g.size = S;
    ig.g.fsize = fsize[i];
    ig.g.pad = padding[i];
    ig.g.stride = stride[i];
    ig.g.modules_x = M;
    if (rs[i]) {
      ig.g.vchan = rand_sparse_table(spec.name(), i, channels[i], groups[i], fc);
    } else {
      ig.g.vchan.resize(channels[i]);
      std::iota(ig.g.vchan.begin(), ig.g.vchan.end(), 0);
    }
    cs.in.push_back(std::move(ig));
  }
  for (int i = 1; i < n; ++i)
    if (mods[i] != mods[0] || outf[i] != outf[0]) {
      std::string dims;
      for (int j = 0; j < n; ++j)
        dims += cat(j ? ", " : "", "'", ctx.in_names[j], "' gives ", outf[j], "x", mods[j], "x", mods[j]);
      spec.fail_layer(cat("all inputs must produce outputs of the same shape (filters*groups x modulesX x modulesX); ",
                          dims, "."));
    }
  cs.filters = outf[0];
  cs.modules_x = mods[0];
  return cs;
}

void check_weight_source_types(LayerSpec& spec, SetupCtx& ctx, const Layer& layer) {
  for (const Param* p : layer.weights) {
    if (p->layer == layer.name) continue;
    const Layer* src = ctx.net->find_layer(p->layer);
    if (src && src->type != layer.type)
      spec.fail("weightSource", cat("layer '", src->name, "' is of type ", src->type, "; a ", layer.type,
                                    " layer can only share weights with another ", layer.type, " layer."));
  }
}

int conv_chunk(int n, int64_t bytes_per_case) {
  const int64_t budget = unfold_budget_bytes(64LL << 20);  // CCN_UNFOLD_BYTES overrides (kernels/unfold.h)
  int64_t b = bytes_per_case > 0 ? budget / bytes_per_case : n;
  return (int)std::max<int64_t>(1, std::min<int64_t>(n, b));
}

}  // namespace ccn
