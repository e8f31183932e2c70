// Tensor helpers shared by the SSI plugins: data types, dims checks and text.
#pragma once

#include "ssi/kernels.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

namespace ssi
{
namespace trt
{

//! The kernels' dtype of a TensorRT type; false for anything but kFLOAT and kHALF.
bool toKernelType(nvinfer1::DataType type, ssi::DType& out) noexcept;

//! True for the types every SSI plugin accepts (kFLOAT, kHALF).
bool isSupportedType(nvinfer1::DataType type) noexcept;

char const* dataTypeName(nvinfer1::DataType type) noexcept;

//! "[1,64,-1,-1]"
std::string dimsText(nvinfer1::Dims const& dims);

//! a and b both known (>= 0) and different.
inline bool knownMismatch(int64_t a, int64_t b) noexcept
{
    return a >= 0 && b >= 0 && a != b;
}

//! `dims` has rank `rank`; otherwise false and "<what> must be 4-D, got [..]" in `error`.
bool checkRank(nvinfer1::Dims const& dims, int32_t rank, std::string const& what, std::string& error);

//! Extent `axis` of `dims` equals `expected` where both are known; otherwise false and a
//! message naming `what` in `error`.
bool checkExtent(nvinfer1::Dims const& dims, int32_t axis, int64_t expected, std::string const& what,
    std::string const& expectedText, std::string& error);

//! Every extent known (>= 0).
bool allKnown(nvinfer1::Dims const& dims) noexcept;

//! Every extent known and at most INT32_MAX, as the kernels' parameters need.
bool fitsInt32(nvinfer1::Dims const& dims) noexcept;

//! Number of elements; 0 when an extent is 0, -1 when one is unknown.
int64_t volume(nvinfer1::Dims const& dims) noexcept;

//! Output extent of a convolution along one axis; <= 0 when the window does not fit.
inline int64_t convOutputSize(int64_t in, int64_t kernel, int32_t stride, int32_t pad, int32_t dilation) noexcept
{
    int64_t const room = in + 2 * static_cast<int64_t>(pad) - static_cast<int64_t>(dilation) * (kernel - 1) - 1;
    return room < 0 ? 0 : room / stride + 1;
}

} // namespace trt
} // namespace ssi
