// ccn/native/layers/conv_common.h: the keys and shape rule shared by type=conv and type=local.
//
// Per-input comma lists (one value per input, a single value applies to all), as in both
// generations of cuda-convnet's layer.py: channels, filterSize, padding (default 0),
// stride (default 1), filters, groups (default 1), randSparse (default 0), filterChannels
// (only with randSparse), initW, weightSource. `filters` is the number of filters PER GROUP,
// as in the original (layer.py multiplies it by groups): the layer outputs
// filters * groups channels, and every input must give the same filters * groups and the
// same modulesX. cuda-convnet2's optional `modulesX` overrides the computed value.
//
//   modulesX = 1 + ceil((2 * padding + imgSize - filterSize) / stride)
//
// Filter f (of F = filters * groups) sees group g = f / filters; group g reads
// filterChannels image channels, given by the virtual-channel table vchan[g * Cf + c]:
// plain groups use channels g * Cf .. g * Cf + Cf - 1 (Cf = channels / groups).
//
// randSparse (2012 code): each group reads its own random choice of filterChannels channels
// (groups * filterChannels / channels random permutations of all channels, concatenated and
// cut into groups; so a channel may feed several groups when filterChannels > channels /
// groups). The original drew the table at random and stored it with the model; ccn draws it
// from a fixed hash of the layer name and input index, so the same definition file always
// gives the same table and a checkpoint needs nothing extra. With filterChannels =
// channels / groups (the default) it is a random relabelling of plain groups.
//
// GPU-kernel restrictions of the original (channels multiple of 4, filters multiple of 16,
// partialSum dividing the modules, filterChannels multiple of 4) are lifted; partialSum and
// sumWidth are accepted and ignored.
#pragma once
#include <string>
#include <vector>

#include "kernels/unfold.h"
#include "layers/layer.h"

namespace ccn {

struct ConvInputGeom {
  UnfoldGeom g;      // image geometry and virtual channels (|vchan| = groups * filterChannels)
  int groups = 1;
  int filter_channels = 0;  // Cf
  int64_t kg() const { return (int64_t)filter_channels * g.fsize * g.fsize; }  // weight rows per group
};

struct ConvSetup {
  std::vector<ConvInputGeom> in;
  int filters = 0;    // F = filters * groups, output channels
  int modules_x = 0;  // output rows = cols
  int64_t modules() const { return (int64_t)modules_x * modules_x; }
};

// Reads and checks the shared keys (not sharedBiases, weights or biases) for layer type
// `type` ("conv" or "local"); errors name the file, line, section and key.
ConvSetup parse_conv_setup(LayerSpec& spec, SetupCtx& ctx, const std::string& type);

// Weight sharing (weightSource) must stay within the same layer type, as in the original.
void check_weight_source_types(LayerSpec& spec, SetupCtx& ctx, const Layer& layer);

// How many cases to unfold at once so that `bytes_per_case` times the chunk stays within
// about 64 MB (at least 1, at most n). The environment variable CCN_UNFOLD_BYTES overrides the
// 64 MB (tests use it to exercise the chunked path on small tensors).
int conv_chunk(int n, int64_t bytes_per_case);

}  // namespace ccn
