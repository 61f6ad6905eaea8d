// ccn/native/layers/data.cpp: type=data. Its output is the minibatch matrix number
// `dataIdx` given by the data provider (0 images, 1 labels, ...), copied in by the net.
#include "layers/layer.h"

namespace ccn {

class DataLayer : public Layer {
 public:
  void setup(LayerSpec& spec, SetupCtx& ctx) override {
    if (!ctx.in.empty()) spec.fail("inputs", "a data layer takes no inputs.");
    idx_ = spec.get_int("dataIdx");
    if (idx_ < 0) spec.fail("dataIdx", cat("must be 0 or more, found ", idx_, "."));
    auto it = ctx.data_dims->find(idx_);
    if (it == ctx.data_dims->end()) {
      std::string have;
      for (const auto& kv : *ctx.data_dims) have += cat(have.empty() ? "" : ", ", kv.first, " (", kv.second.str(), ")");
      spec.fail("dataIdx", cat("the data provider has no matrix number ", idx_, "; it offers ",
                               have.empty() ? std::string("none") : have, "."));
    }
    out = it->second;
  }
  void fprop(const std::vector<const Mat*>&, Mat&, const PassCtx&) override {}
  void bprop(const std::vector<const Mat*>&, const Mat&, const Mat&, const std::vector<Mat*>&, const PassCtx&) override {}
  bool is_data() const override { return true; }
  int data_idx() const override { return idx_; }

 private:
  int idx_ = 0;
};
CCN_REGISTER_LAYER("data", DataLayer);

}  // namespace ccn
