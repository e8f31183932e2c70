#include "common/pluginTensors.h"

#include <limits>

using nvinfer1::DataType;

namespace ssi
{
namespace trt
{

bool toKernelType(DataType type, ssi::DType& out) noexcept
{
    switch (type)
    {
    case DataType::kFLOAT: out = ssi::DType::kFLOAT32; return true;
    case DataType::kHALF: out = ssi::DType::kFLOAT16; return true;
    default: return false;
    }
}

bool isSupportedType(DataType type) noexcept
{
    return type == DataType::kFLOAT || type == DataType::kHALF;
}

char const* dataTypeName(DataType type) noexcept
{
    switch (type)
    {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kINT8: return "int8";
    case DataType::kINT32: return "int32";
    case DataType::kBOOL: return "bool";
    case DataType::kUINT8: return "uint8";
    case DataType::kFP8: return "fp8";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT64: return "int64";
    case DataType::kINT4: return "int4";
    default: return "an unsupported type";
    }
}

std::string dimsText(nvinfer1::Dims const& dims)
{
    if (dims.nbDims < 0 || dims.nbDims > nvinfer1::Dims::MAX_DIMS)
    {
        return "[invalid rank " + std::to_string(dims.nbDims) + "]";
    }
    std::string out = "[";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        out += (i ? "," : "") + std::to_string(dims.d[i]);
    }
    return out + "]";
}

bool checkRank(nvinfer1::Dims const& dims, int32_t rank, std::string const& what, std::string& error)
{
    if (dims.nbDims != rank)
    {
        error = what + " must be " + std::to_string(rank) + "-D, got dims " + dimsText(dims);
        return false;
    }
    return true;
}

bool checkExtent(nvinfer1::Dims const& dims, int32_t axis, int64_t expected, std::string const& what,
    std::string const& expectedText, std::string& error)
{
    if (knownMismatch(dims.d[axis], expected))
    {
        error = what + " " + dimsText(dims) + ": extent " + std::to_string(axis) + " is " + std::to_string(dims.d[axis])
            + ", expected " + std::to_string(expected) + " (" + expectedText + ")";
        return false;
    }
    return true;
}

bool allKnown(nvinfer1::Dims const& dims) noexcept
{
    if (dims.nbDims < 0 || dims.nbDims > nvinfer1::Dims::MAX_DIMS)
    {
        return false;
    }
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        if (dims.d[i] < 0)
        {
            return false;
        }
    }
    return true;
}

bool fitsInt32(nvinfer1::Dims const& dims) noexcept
{
    if (!allKnown(dims))
    {
        return false;
    }
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        if (dims.d[i] > std::numeric_limits<int32_t>::max())
        {
            return false;
        }
    }
    return true;
}

int64_t volume(nvinfer1::Dims const& dims) noexcept
{
    if (!allKnown(dims))
    {
        return -1;
    }
    int64_t v = 1;
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        v *= dims.d[i];
    }
    return v;
}

} // namespace trt
} // namespace ssi
