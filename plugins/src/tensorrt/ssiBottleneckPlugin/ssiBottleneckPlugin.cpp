#include "ssiBottleneckPlugin/ssiBottleneckPlugin.h"

#include "ssi/contract.h"

#include <exception>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace ssi
{
namespace trt
{
namespace
{

namespace op = ssi::contract::SSIBottleneck;

// Names, defaults and valid ranges: the generated contract (ssi/contract.h). How the weights'
// shapes must fit x and each other is a shape check (checkShapes).
AttrSpec const kSpecs[] = {
    SSI_CONTRACT_ATTR(op, Stride),
    SSI_CONTRACT_ATTR(op, Dcn),
    SSI_CONTRACT_ATTR(op, Downsample),
    SSI_CONTRACT_ATTR(op, Sigma1),
    SSI_CONTRACT_ATTR(op, Sigma2),
    SSI_CONTRACT_ATTR(op, Mode),
    SSI_CONTRACT_ATTR(op, GridInterval),
    SSI_CONTRACT_ATTR(op, Seed),
    SSI_CONTRACT_ATTR(op, Layer1),
    SSI_CONTRACT_ATTR(op, Layer2),
    SSI_CONTRACT_ATTR(op, Density),
};
static_assert(sizeof(kSpecs) / sizeof(kSpecs[0]) == op::kNumAttributes, "SSIBottleneck attributes out of sync");
static_assert(op::kMinInputs == op::kMaxInputs, "SSIBottleneck: every input is present (empty when unused)");
static_assert(op::kNumOutputs == 3, "SSIBottleneck: outputs y, mask1, mask2");

AttrTable const kTable{op::kName, kSpecs, op::kNumAttributes};

// The contract's input names (ssi_deploy/ops/contract.py, SSI_BOTTLENECK.inputs), for messages.
char const* const kInputNames[] = {"x", "mask1_weight", "mask1_bias", "mask2_weight", "mask2_bias", "conv1_weight",
    "conv1_bias", "offset_weight", "offset_bias", "conv2_weight", "conv2_bias", "conv3_weight", "conv3_bias",
    "downsample_weight", "downsample_bias"};
static_assert(sizeof(kInputNames) / sizeof(kInputNames[0]) == op::kMaxInputs, "SSIBottleneck input names");
char const* const kOutputNames[] = {"y", "mask1", "mask2"};

constexpr int32_t kOffsetChannels = 18; // 2 * 3 * 3 deformable-v1 offsets (dy, dx per tap)
constexpr int32_t kHwc8Vector = 8;      // channels per vector of TensorRT's kHWC8

std::string inputName(int32_t i)
{
    return i >= 0 && i < op::kMaxInputs ? std::string(kInputNames[i]) + " (input " + std::to_string(i) + ")"
                                        : "input " + std::to_string(i);
}

char const* formatName(TensorFormat format) noexcept
{
    switch (format)
    {
    case TensorFormat::kLINEAR: return "linear";
    case TensorFormat::kHWC8: return "kHWC8";
    case TensorFormat::kCHW2: return "kCHW2";
    case TensorFormat::kCHW4: return "kCHW4";
    case TensorFormat::kCHW16: return "kCHW16";
    case TensorFormat::kCHW32: return "kCHW32";
    case TensorFormat::kHWC: return "kHWC";
    default: return "a non-linear format";
    }
}

//! A channel count kHWC8 can hold without padding: known and a multiple of 8.
bool fitsHwc8(int64_t channels) noexcept
{
    return channels > 0 && channels % kHwc8Vector == 0;
}

//! `dims` is `want` (rank and every extent, where both are known); else false and a message
//! naming `what` and the expected shape `shape` (e.g. "[p,Cin,1,1]").
bool expectDims(Dims const& dims, std::vector<int64_t> const& want, std::string const& what, std::string const& shape,
    std::string& error)
{
    if (!checkRank(dims, static_cast<int32_t>(want.size()), what + " " + shape, error))
    {
        return false;
    }
    for (size_t axis = 0; axis < want.size(); ++axis)
    {
        if (!checkExtent(dims, static_cast<int32_t>(axis), want[axis], what, shape, error))
        {
            return false;
        }
    }
    return true;
}

//! An empty part ([0]): some extent is 0. Unknown extents do not prove it non-empty.
bool mayBeEmpty(Dims const& dims) noexcept
{
    bool unknown = false;
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        if (dims.d[i] == 0)
        {
            return true;
        }
        unknown = unknown || dims.d[i] < 0;
    }
    return unknown;
}

bool expectEmpty(Dims const& dims, std::string const& what, std::string const& why, std::string& error)
{
    if (mayBeEmpty(dims))
    {
        return true;
    }
    error = what + " " + dimsText(dims) + " must be empty ([0]) " + why;
    return false;
}

} // namespace

AttrTable const& SSIBottleneckPlugin::attributes()
{
    return kTable;
}

SSIBottleneckPlugin::SSIBottleneckPlugin()
    : SsiPlugin(kTable, op::kMinInputs, op::kMaxInputs, op::kDoc, op::kNumOutputs)
{
    // Kernel attributes of the opt-in Hopper GEMMs, once per process and never inside a
    // graph capture (enqueue may be captured); a no-op for the portable kernels.
    static cudaError_t const prepared = ssi::bottleneckPrepare();
    (void) prepared;
}

int64_t SSIBottleneckPlugin::outputExtent(int64_t in) const noexcept
{
    // 3x3 window, padding 1: floor((in + 2 - 3) / s) + 1
    return in < 0 ? -1 : convOutputSize(in, 3, mAttrs.getInt(kStride), 1, 1);
}

bool SSIBottleneckPlugin::checkShapes(Dims const* in, int32_t /* nbInputs */, std::string& error) const
{
    Dims const& x = in[op::kInputX];
    if (!checkRank(x, 4, "x [N,Cin,H,W]", error))
    {
        return false;
    }
    int64_t const cin = x.d[1];
    Dims const& w1 = in[op::kInputConv1Weight];
    Dims const& w3 = in[op::kInputConv3Weight];
    std::string const ofX = " of x " + dimsText(x);
    if (!expectDims(w1, {-1, cin, 1, 1}, "conv1_weight", "[p,Cin,1,1]" + ofX, error))
    {
        return false;
    }
    int64_t const p = w1.d[0];
    std::string const withP = " with p = " + std::to_string(p) + " (conv1_weight " + dimsText(w1) + ")";
    if (!expectDims(w3, {-1, p, 1, 1}, "conv3_weight", "[4p,p,1,1]" + withP, error))
    {
        return false;
    }
    int64_t const cout = w3.d[0];
    std::string const with4p = " with 4p = " + std::to_string(cout) + " (conv3_weight " + dimsText(w3) + ")";
    if (!expectDims(in[op::kInputMask1Weight], {1, cin, 3, 3}, "mask1_weight", "[1,Cin,3,3]" + ofX, error)
        || !expectDims(in[op::kInputMask1Bias], {1}, "mask1_bias", "[1]", error)
        || !expectDims(in[op::kInputMask2Weight], {1, cin, 3, 3}, "mask2_weight", "[1,Cin,3,3]" + ofX, error)
        || !expectDims(in[op::kInputMask2Bias], {1}, "mask2_bias", "[1]", error)
        || !expectDims(in[op::kInputConv1Bias], {p}, "conv1_bias", "[p]" + withP, error)
        || !expectDims(in[op::kInputConv2Weight], {p, p, 3, 3}, "conv2_weight", "[p,p,3,3]" + withP, error)
        || !expectDims(in[op::kInputConv2Bias], {p}, "conv2_bias", "[p]" + withP, error)
        || !expectDims(in[op::kInputConv3Bias], {cout}, "conv3_bias", "[4p]" + with4p, error))
    {
        return false;
    }
    if (mAttrs.getInt(kDcn) != 0)
    {
        if (!expectDims(in[op::kInputOffsetWeight], {kOffsetChannels, cin, 3, 3}, "offset_weight",
                "[18,Cin,3,3] (dcn=1)" + ofX, error)
            || !expectDims(in[op::kInputOffsetBias], {kOffsetChannels}, "offset_bias", "[18] (dcn=1)", error))
        {
            return false;
        }
    }
    else if (!expectEmpty(in[op::kInputOffsetWeight], "offset_weight", "with dcn=0", error)
        || !expectEmpty(in[op::kInputOffsetBias], "offset_bias", "with dcn=0", error))
    {
        return false;
    }
    if (mAttrs.getInt(kDownsample) != 0)
    {
        if (!expectDims(in[op::kInputDownsampleWeight], {cout, cin, 1, 1}, "downsample_weight",
                "[4p,Cin,1,1] (downsample=1)" + with4p + ofX, error)
            || !expectDims(in[op::kInputDownsampleBias], {cout}, "downsample_bias", "[4p] (downsample=1)" + with4p,
                error))
        {
            return false;
        }
    }
    else
    {
        if (!expectEmpty(in[op::kInputDownsampleWeight], "downsample_weight", "with downsample=0", error)
            || !expectEmpty(in[op::kInputDownsampleBias], "downsample_bias", "with downsample=0", error))
        {
            return false;
        }
        int32_t const stride = mAttrs.getInt(kStride);
        if (stride != 1 || knownMismatch(cin, cout))
        {
            error = "an identity shortcut (downsample=0) needs stride 1 and Cin = 4p (got stride "
                + std::to_string(stride) + ", x " + dimsText(x) + ", conv3_weight " + dimsText(w3) + ")";
            return false;
        }
    }
    return true;
}

int32_t SSIBottleneckPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /* shapeInputs */, int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    try
    {
        std::string error;
        if (!checkCounts(nbInputs, nbOutputs, error))
        {
            reportError(error);
            return -1;
        }
        if (inputs == nullptr || outputs == nullptr || inputs[op::kInputX].nbDims != 4
            || inputs[op::kInputConv3Weight].nbDims != 4)
        {
            reportError("x and conv3_weight must be 4-D ([N,Cin,H,W] and [4p,p,1,1])");
            return -1;
        }
        DimsExprs const& x = inputs[op::kInputX];
        DimsExprs const& w3 = inputs[op::kInputConv3Weight];
        int32_t const stride = mAttrs.getInt(kStride);
        // Ho = floor((H - 1) / stride) + 1 (3x3, padding 1); H itself at stride 1.
        auto extent = [&](IDimensionExpr const* in) -> IDimensionExpr const* {
            if (in == nullptr || stride == 1)
            {
                return in;
            }
            IDimensionExpr const* one = exprBuilder.constant(1);
            IDimensionExpr const* cs = exprBuilder.constant(stride);
            if (one == nullptr || cs == nullptr)
            {
                return nullptr;
            }
            IDimensionExpr const* room = exprBuilder.operation(DimensionOperation::kSUB, *in, *one);
            if (room == nullptr)
            {
                return nullptr;
            }
            IDimensionExpr const* steps = exprBuilder.operation(DimensionOperation::kFLOOR_DIV, *room, *cs);
            return steps == nullptr ? nullptr : exprBuilder.operation(DimensionOperation::kSUM, *steps, *one);
        };
        IDimensionExpr const* one = exprBuilder.constant(1);
        IDimensionExpr const* ho = extent(x.d[2]);
        IDimensionExpr const* wo = extent(x.d[3]);
        DimsExprs& y = outputs[kOutputY];
        DimsExprs& m1 = outputs[kOutputMask1];
        DimsExprs& m2 = outputs[kOutputMask2];
        y.nbDims = 4;
        y.d[0] = x.d[0];
        y.d[1] = w3.d[0];
        y.d[2] = ho;
        y.d[3] = wo;
        m1.nbDims = 4;
        m1.d[0] = x.d[0];
        m1.d[1] = one;
        m1.d[2] = x.d[2];
        m1.d[3] = x.d[3];
        m2.nbDims = 4;
        m2.d[0] = x.d[0];
        m2.d[1] = one;
        m2.d[2] = ho;
        m2.d[3] = wo;
        for (int32_t o = 0; o < op::kNumOutputs; ++o)
        {
            for (int32_t j = 0; j < 4; ++j)
            {
                if (outputs[o].d[j] == nullptr)
                {
                    reportError("could not build the output shape expressions");
                    return -1;
                }
            }
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError(e.what());
    }
    return -1;
}

bool SSIBottleneckPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    // Decided on inOut[0..pos] only: TensorRT fixes the formats in position order.
    if (inOut == nullptr || nbInputs != op::kMaxInputs || nbOutputs != op::kNumOutputs || pos < 0
        || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    PluginTensorDesc const& x = inOut[op::kInputX].desc;
    if (!isSupportedType(desc.type) || (pos > 0 && desc.type != x.type))
    {
        return false;
    }
    if (pos == op::kInputX)
    {
        return desc.format == TensorFormat::kLINEAR
            || (desc.format == TensorFormat::kHWC8 && desc.type == DataType::kHALF && desc.dims.nbDims == 4
                && fitsHwc8(desc.dims.d[1]));
    }
    if (pos == nbInputs + kOutputY)
    {
        if (desc.format != x.format)
        {
            return false; // y in x's layout
        }
        if (desc.format == TensorFormat::kLINEAR)
        {
            return true;
        }
        if (desc.format != TensorFormat::kHWC8 || desc.type != DataType::kHALF)
        {
            return false;
        }
        // kHWC8: 4p must be a multiple of 8 too (y's channels, or conv3_weight's dim 0).
        Dims const& w3 = inOut[op::kInputConv3Weight].desc.dims;
        int64_t const cout = desc.dims.nbDims == 4 && desc.dims.d[1] >= 0 ? desc.dims.d[1]
            : w3.nbDims >= 1                                              ? w3.d[0]
                                                                          : -1;
        return fitsHwc8(cout);
    }
    return desc.format == TensorFormat::kLINEAR; // weights and masks
}

BottleneckParams SSIBottleneckPlugin::params(
    Dims const& x, Dims const& conv1Weight, Dims const& conv3Weight, bool channelsLast) const noexcept
{
    BottleneckParams p{};
    p.n = static_cast<int32_t>(x.d[0]);
    p.cin = static_cast<int32_t>(x.d[1]);
    p.h = static_cast<int32_t>(x.d[2]);
    p.w = static_cast<int32_t>(x.d[3]);
    p.planes = static_cast<int32_t>(conv1Weight.d[0]);
    p.cout = static_cast<int32_t>(conv3Weight.d[0]);
    p.stride = mAttrs.getInt(kStride);
    p.dcn = mAttrs.getInt(kDcn);
    p.downsample = mAttrs.getInt(kDownsample);
    p.sigma1 = mAttrs.getFloat(kSigma1);
    p.sigma2 = mAttrs.getFloat(kSigma2);
    p.mode = mAttrs.getInt(kMode);
    p.gridInterval = mAttrs.getInt(kGridInterval);
    p.seed = mAttrs.getInt(kSeed);
    p.layer1 = mAttrs.getInt(kLayer1);
    p.layer2 = mAttrs.getInt(kLayer2);
    p.density = mAttrs.getFloat(kDensity);
    p.channelsLast = channelsLast ? 1 : 0;
    return p;
}

size_t SSIBottleneckPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /* outputs */, int32_t nbOutputs) const noexcept
{
    try
    {
        std::string error;
        ssi::DType type{};
        if (inputs == nullptr || !checkCounts(nbInputs, nbOutputs, error))
        {
            reportError("getWorkspaceSize: " + (error.empty() ? std::string("no input descriptions") : error));
            return 0;
        }
        // The profile's max dims: the kernels' grids and buffers are sized for the largest input.
        Dims const& x = inputs[op::kInputX].max;
        Dims const& w1 = inputs[op::kInputConv1Weight].max;
        Dims const& w3 = inputs[op::kInputConv3Weight].max;
        if (x.nbDims != 4 || w1.nbDims != 4 || w3.nbDims != 4 || !fitsInt32(x) || !fitsInt32(w1) || !fitsInt32(w3)
            || !toKernelType(inputs[op::kInputX].desc.type, type))
        {
            reportError("getWorkspaceSize: x, conv1_weight and conv3_weight need known 4-D max dims and "
                        "float32/float16 type, got x "
                + dimsText(x) + ", conv1_weight " + dimsText(w1) + ", conv3_weight " + dimsText(w3));
            return 0;
        }
        BottleneckParams const p = params(x, w1, w3, inputs[op::kInputX].desc.format == TensorFormat::kHWC8);
        if (!ssi::validBottleneckParams(p))
        {
            reportError("getWorkspaceSize: the kernels do not accept x " + dimsText(x) + " with conv1_weight "
                + dimsText(w1) + " and conv3_weight " + dimsText(w3) + " (" + mAttrs.describe() + ")");
            return 0;
        }
        return ssi::ssiBottleneckWorkspaceSize(p, type);
    }
    catch (std::exception const& e)
    {
        reportError(e.what());
    }
    return 0;
}

int32_t SSIBottleneckPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        if (mNbInputs < 0)
        {
            reportError("enqueue before configurePlugin/onShapeChange: the number of inputs is unknown");
            return -1;
        }
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            reportError("enqueue without tensor descriptions or pointers");
            return -1;
        }
        bool anyOutput = false;
        for (int32_t o = 0; o < op::kNumOutputs; ++o)
        {
            anyOutput = anyOutput || volume(outputDesc[o].dims) != 0;
        }
        if (!anyOutput)
        {
            return 0; // empty outputs (e.g. batch 0): nothing to compute
        }
        DataType const t = inputDesc[op::kInputX].type;
        ssi::DType type{};
        if (!toKernelType(t, type))
        {
            reportError(std::string("x (input 0) is ") + dataTypeName(t) + "; only float32 and float16 are supported");
            return -1;
        }
        TensorFormat const xFormat = inputDesc[op::kInputX].format;
        if (xFormat != TensorFormat::kLINEAR && !(xFormat == TensorFormat::kHWC8 && t == DataType::kHALF))
        {
            reportError(std::string("x (input 0) is ") + formatName(xFormat) + " " + dataTypeName(t)
                + "; expected linear, or kHWC8 in float16");
            return -1;
        }
        for (int32_t i = 0; i < mNbInputs; ++i)
        {
            TensorFormat const want = i == op::kInputX ? xFormat : TensorFormat::kLINEAR;
            if (inputDesc[i].type != t || inputDesc[i].format != want)
            {
                reportError(inputName(i) + " is " + formatName(inputDesc[i].format) + " "
                    + dataTypeName(inputDesc[i].type) + ", expected " + formatName(want) + " " + dataTypeName(t));
                return -1;
            }
            if (inputs[i] == nullptr && volume(inputDesc[i].dims) != 0)
            {
                reportError(inputName(i) + " has a null device pointer");
                return -1;
            }
        }
        for (int32_t o = 0; o < op::kNumOutputs; ++o)
        {
            TensorFormat const want = o == kOutputY ? xFormat : TensorFormat::kLINEAR;
            if (outputDesc[o].type != t || outputDesc[o].format != want)
            {
                reportError("output " + std::to_string(o) + " (" + kOutputNames[o] + ") is "
                    + formatName(outputDesc[o].format) + " " + dataTypeName(outputDesc[o].type) + ", expected "
                    + formatName(want) + " " + dataTypeName(t));
                return -1;
            }
            if (outputs[o] == nullptr && volume(outputDesc[o].dims) != 0)
            {
                reportError("output " + std::to_string(o) + " (" + kOutputNames[o] + ") has a null device pointer");
                return -1;
            }
        }
        std::string error;
        if (!launch(inputDesc, outputDesc, inputs, outputs, type, workspace, stream, error))
        {
            reportError(error);
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError(e.what());
    }
    return -1;
}

bool SSIBottleneckPlugin::launch(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, ssi::DType type, void* workspace, cudaStream_t stream,
    std::string& error) const
{
    std::vector<Dims> dims(static_cast<size_t>(mNbInputs));
    for (int32_t i = 0; i < mNbInputs; ++i)
    {
        dims[i] = inputDesc[i].dims;
        if (!fitsInt32(dims[i]))
        {
            error = inputName(i) + " dims " + dimsText(dims[i]) + " are not concrete int32 extents";
            return false;
        }
    }
    if (!checkShapes(dims.data(), mNbInputs, error))
    {
        return false;
    }
    bool const channelsLast = inputDesc[op::kInputX].format == TensorFormat::kHWC8;
    BottleneckParams const p
        = params(dims[op::kInputX], dims[op::kInputConv1Weight], dims[op::kInputConv3Weight], channelsLast);
    if (channelsLast && (!fitsHwc8(p.cin) || !fitsHwc8(p.cout)))
    {
        error = "kHWC8 needs Cin and 4p to be multiples of 8, got Cin " + std::to_string(p.cin) + ", 4p "
            + std::to_string(p.cout);
        return false;
    }
    int64_t const ho = outputExtent(p.h);
    int64_t const wo = outputExtent(p.w);
    std::vector<int64_t> const want[op::kNumOutputs] = {{p.n, p.cout, ho, wo}, {p.n, 1, p.h, p.w}, {p.n, 1, ho, wo}};
    for (int32_t o = 0; o < op::kNumOutputs; ++o)
    {
        Dims const& d = outputDesc[o].dims;
        bool same = d.nbDims == 4;
        for (int32_t j = 0; same && j < 4; ++j)
        {
            same = d.d[j] == want[o][j];
        }
        if (!same)
        {
            error = "output " + std::to_string(o) + " (" + kOutputNames[o] + ") dims " + dimsText(d)
                + " differ from the block's [" + std::to_string(want[o][0]) + "," + std::to_string(want[o][1]) + ","
                + std::to_string(want[o][2]) + "," + std::to_string(want[o][3]) + "]";
            return false;
        }
    }
    if (!ssi::validBottleneckParams(p))
    {
        error = "the kernels do not accept x " + dimsText(dims[op::kInputX]) + " with p " + std::to_string(p.planes)
            + ", 4p " + std::to_string(p.cout) + " (" + mAttrs.describe() + ")";
        return false;
    }
    size_t const need = ssi::ssiBottleneckWorkspaceSize(p, type);
    if (need > 0 && workspace == nullptr)
    {
        error = "no workspace given, " + std::to_string(need) + " bytes needed";
        return false;
    }
    bool const dcn = p.dcn != 0;
    bool const downsample = p.downsample != 0;
    BottleneckTensors tensors{};
    tensors.x = inputs[op::kInputX];
    tensors.mask1W = inputs[op::kInputMask1Weight];
    tensors.mask1B = inputs[op::kInputMask1Bias];
    tensors.mask2W = inputs[op::kInputMask2Weight];
    tensors.mask2B = inputs[op::kInputMask2Bias];
    tensors.conv1W = inputs[op::kInputConv1Weight];
    tensors.conv1B = inputs[op::kInputConv1Bias];
    tensors.offsetW = dcn ? inputs[op::kInputOffsetWeight] : nullptr;
    tensors.offsetB = dcn ? inputs[op::kInputOffsetBias] : nullptr;
    tensors.conv2W = inputs[op::kInputConv2Weight];
    tensors.conv2B = inputs[op::kInputConv2Bias];
    tensors.conv3W = inputs[op::kInputConv3Weight];
    tensors.conv3B = inputs[op::kInputConv3Bias];
    tensors.downsampleW = downsample ? inputs[op::kInputDownsampleWeight] : nullptr;
    tensors.downsampleB = downsample ? inputs[op::kInputDownsampleBias] : nullptr;
    tensors.y = outputs[kOutputY];
    tensors.mask1 = outputs[kOutputMask1];
    tensors.mask2 = outputs[kOutputMask2];
    cudaError_t const status = ssi::launchSSIBottleneck(tensors, type, p, workspace, stream);
    if (status != cudaSuccess)
    {
        error = "SSIBottleneck kernel launch failed: " + cudaErrorText(status);
        return false;
    }
    return true;
}

} // namespace trt
} // namespace ssi
