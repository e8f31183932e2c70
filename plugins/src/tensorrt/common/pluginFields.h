// Plugin fields of the SSI plugins: the attributes of the op contract (ssi/contract.h),
// parsed from a PluginFieldCollection (ONNX parser, Python, deserialisation) and written
// back for serialisation. One table per op describes names, kinds, defaults and valid
// ranges; everything else (parsing, checking, serialising, describing) lives here once.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace ssi
{
namespace trt
{

enum class AttrKind : int32_t
{
    kInt = 0,   //!< serialised as PluginFieldType::kINT32
    kFloat = 1, //!< serialised as PluginFieldType::kFLOAT32
};

//! One attribute of an op: name from the contract, kind, default and valid range.
//! Build it with SSI_CONTRACT_ATTR so that every value comes from ssi/contract.h.
struct AttrSpec
{
    char const* name;
    AttrKind kind;
    double defaultValue;
    double minValue;   //!< smallest valid value (inclusive unless minExclusive)
    double maxValue;   //!< largest valid value (inclusive)
    bool minExclusive; //!< true: the value must be strictly greater than minValue
    char const* range; //!< the valid values in words (contract kRange*), for messages
};

//! The AttrSpec of attribute `Name` of the op namespace `op` (e.g. ssi::contract::SparseConv2d,
//! `StrideH`): name, kind (from the default's type), default and range are the generated
//! contract constants kAttr<Name>, kDefault<Name>, kMin<Name>, kMax<Name>, kMin<Name>Exclusive
//! and kRange<Name>; nothing is written by hand.
#define SSI_CONTRACT_ATTR(op, Name)                                                                                    \
    ::ssi::trt::AttrSpec                                                                                               \
    {                                                                                                                  \
        op::kAttr##Name,                                                                                               \
            std::is_floating_point<decltype(op::kDefault##Name)>::value ? ::ssi::trt::AttrKind::kFloat                 \
                                                                        : ::ssi::trt::AttrKind::kInt,                  \
            static_cast<double>(op::kDefault##Name), static_cast<double>(op::kMin##Name),                              \
            static_cast<double>(op::kMax##Name), op::kMin##Name##Exclusive, op::kRange##Name                           \
    }

//! The attribute table of one op.
struct AttrTable
{
    char const* opName;
    AttrSpec const* specs;
    int32_t count;
};

//! The field names TensorRT asks a creator for (getFieldNames): every attribute of the
//! table with its serialised type, no data. The ONNX parser forwards only these.
class FieldNames
{
public:
    explicit FieldNames(AttrTable const& table);
    nvinfer1::PluginFieldCollection const* collection() const noexcept
    {
        return &mCollection;
    }

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

//! The attribute values of one plugin instance.
class PluginAttributes
{
public:
    //! All attributes at their contract defaults.
    explicit PluginAttributes(AttrTable const& table);

    //! Set the attributes given in `fc` (null: none); missing ones keep their defaults.
    //! Accepted field types: ints as kINT32 (or kINT64 in int32 range), floats as kFLOAT32
    //! (or kFLOAT64), either as kCHAR text of the number, with or without the trailing NUL.
    //! Unknown, repeated, ill-typed or out-of-range fields make it return false with a
    //! one-line reason in `error`; the values are then unspecified.
    bool parse(nvinfer1::PluginFieldCollection const* fc, std::string& error);

    int32_t getInt(int32_t index) const noexcept
    {
        return mValues[index].i;
    }
    float getFloat(int32_t index) const noexcept
    {
        return mValues[index].f;
    }

    //! The fields to serialise: every attribute, kINT32/kFLOAT32, length 1. The returned
    //! collection points into this object and stays valid until the next call or its end.
    nvinfer1::PluginFieldCollection const* serialize();

    //! "name=value, name=value, ..." in table order.
    std::string describe() const;

    AttrTable const& table() const noexcept
    {
        return mTable;
    }

private:
    struct Value
    {
        int32_t i{0};
        float f{0.F};
    };
    bool parseOne(nvinfer1::PluginField const& field, AttrSpec const& spec, Value& value, std::string& error) const;

    AttrTable mTable;
    std::vector<Value> mValues;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

//! Name of a PluginFieldType for messages ("kINT32").
char const* fieldTypeName(nvinfer1::PluginFieldType type) noexcept;

} // namespace trt
} // namespace ssi
