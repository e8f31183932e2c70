#include "common/pluginFields.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <limits>
#include <sstream>

using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;

namespace ssi
{
namespace trt
{
namespace
{

PluginFieldType serialType(AttrKind kind) noexcept
{
    return kind == AttrKind::kInt ? PluginFieldType::kINT32 : PluginFieldType::kFLOAT32;
}

std::string knownNames(AttrTable const& table)
{
    std::string out;
    for (int32_t i = 0; i < table.count; ++i)
    {
        out += (i ? ", " : "") + std::string(table.specs[i].name);
    }
    return out;
}

//! Text of a kCHAR field: `length` bytes, trailing NULs dropped; false on an embedded NUL.
bool fieldText(PluginField const& field, std::string& text)
{
    text.assign(static_cast<char const*>(field.data), static_cast<size_t>(field.length));
    while (!text.empty() && text.back() == '\0')
    {
        text.pop_back();
    }
    return text.find('\0') == std::string::npos;
}

std::string rangeText(AttrSpec const& spec)
{
    if (spec.range != nullptr && spec.range[0] != '\0')
    {
        return spec.range; // the contract's words (ssi/contract.h kRange*)
    }
    std::ostringstream os;
    bool const hasMax = spec.maxValue < static_cast<double>(std::numeric_limits<int32_t>::max());
    if (spec.kind == AttrKind::kInt)
    {
        if (hasMax)
        {
            os << "in [" << static_cast<int64_t>(spec.minValue) << ", " << static_cast<int64_t>(spec.maxValue)
               << "]";
        }
        else
        {
            os << ">= " << static_cast<int64_t>(spec.minValue);
        }
    }
    else
    {
        os << (spec.minExclusive ? "> " : ">= ") << spec.minValue;
        if (hasMax)
        {
            os << " and <= " << spec.maxValue;
        }
    }
    return os.str();
}

} // namespace

char const* fieldTypeName(PluginFieldType type) noexcept
{
    // Only the types every TensorRT 10.x/11.x header has; newer ones print as a number.
    switch (type)
    {
    case PluginFieldType::kFLOAT16: return "kFLOAT16";
    case PluginFieldType::kFLOAT32: return "kFLOAT32";
    case PluginFieldType::kFLOAT64: return "kFLOAT64";
    case PluginFieldType::kINT8: return "kINT8";
    case PluginFieldType::kINT16: return "kINT16";
    case PluginFieldType::kINT32: return "kINT32";
    case PluginFieldType::kCHAR: return "kCHAR";
    case PluginFieldType::kDIMS: return "kDIMS";
    case PluginFieldType::kUNKNOWN: return "kUNKNOWN";
    default: break;
    }
    static thread_local char buffer[48];
    std::snprintf(buffer, sizeof(buffer), "PluginFieldType %d", static_cast<int>(type));
    return buffer;
}

FieldNames::FieldNames(AttrTable const& table)
{
    mFields.reserve(static_cast<size_t>(table.count));
    for (int32_t i = 0; i < table.count; ++i)
    {
        mFields.emplace_back(table.specs[i].name, nullptr, serialType(table.specs[i].kind), 1);
    }
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
}

PluginAttributes::PluginAttributes(AttrTable const& table)
    : mTable(table)
    , mValues(static_cast<size_t>(table.count))
{
    for (int32_t i = 0; i < table.count; ++i)
    {
        AttrSpec const& spec = table.specs[i];
        if (spec.kind == AttrKind::kInt)
        {
            mValues[i].i = static_cast<int32_t>(spec.defaultValue);
        }
        else
        {
            mValues[i].f = static_cast<float>(spec.defaultValue);
        }
    }
}

bool PluginAttributes::parseOne(PluginField const& field, AttrSpec const& spec, Value& value, std::string& error) const
{
    std::string const where = std::string(mTable.opName) + ": field '" + spec.name + "'";
    std::string const wanted = spec.kind == AttrKind::kInt ? "an int (kINT32)" : "a float (kFLOAT32)";
    if (field.data == nullptr || field.length < 1)
    {
        error = where + " has no data (length " + std::to_string(field.length) + ")";
        return false;
    }
    bool const isText = field.type == PluginFieldType::kCHAR;
    if (!isText && field.length != 1)
    {
        error = where + " must hold exactly one value, got " + std::to_string(field.length);
        return false;
    }
    double number = 0.0;
    if (isText)
    {
        std::string text;
        if (!fieldText(field, text) || text.empty())
        {
            error = where + " is an empty or malformed string; expected " + wanted;
            return false;
        }
        char const* begin = text.c_str();
        char* end = nullptr;
        errno = 0;
        if (spec.kind == AttrKind::kInt)
        {
            long long const v = std::strtoll(begin, &end, 10);
            number = static_cast<double>(v);
        }
        else
        {
            number = std::strtod(begin, &end);
        }
        if (end == begin || *end != '\0' || errno == ERANGE)
        {
            error = where + " = \"" + text + "\" is not " + wanted;
            return false;
        }
    }
    else if (spec.kind == AttrKind::kInt && field.type == PluginFieldType::kINT32)
    {
        number = static_cast<double>(*static_cast<int32_t const*>(field.data));
    }
    else if (spec.kind == AttrKind::kInt && field.type == PluginFieldType::kINT64)
    {
        number = static_cast<double>(*static_cast<int64_t const*>(field.data));
    }
    else if (spec.kind == AttrKind::kFloat && field.type == PluginFieldType::kFLOAT32)
    {
        number = static_cast<double>(*static_cast<float const*>(field.data));
    }
    else if (spec.kind == AttrKind::kFloat && field.type == PluginFieldType::kFLOAT64)
    {
        number = *static_cast<double const*>(field.data);
    }
    else
    {
        error = where + " must be " + wanted + ", got " + fieldTypeName(field.type);
        return false;
    }

    bool const belowMin = spec.minExclusive ? !(number > spec.minValue) : !(number >= spec.minValue);
    if (!std::isfinite(number) || belowMin || number > spec.maxValue)
    {
        // The same sentence as the Python check (OpDef.check_values), ranges from the contract.
        std::ostringstream os;
        os << mTable.opName << " attribute " << spec.name << "=";
        if (spec.kind == AttrKind::kInt && std::isfinite(number))
        {
            os << static_cast<int64_t>(number);
        }
        else
        {
            os << std::setprecision(9) << number;
        }
        os << " is out of range: expected " << rangeText(spec);
        error = os.str();
        return false;
    }
    if (spec.kind == AttrKind::kInt)
    {
        value.i = static_cast<int32_t>(number);
    }
    else
    {
        value.f = static_cast<float>(number);
        if (!std::isfinite(value.f))
        {
            error = where + " does not fit in a float32";
            return false;
        }
    }
    return true;
}

bool PluginAttributes::parse(PluginFieldCollection const* fc, std::string& error)
{
    if (fc == nullptr)
    {
        return true;
    }
    if (fc->nbFields < 0 || (fc->nbFields > 0 && fc->fields == nullptr))
    {
        error = std::string(mTable.opName) + ": malformed field collection (" + std::to_string(fc->nbFields)
            + " fields)";
        return false;
    }
    std::vector<bool> seen(static_cast<size_t>(mTable.count), false);
    for (int32_t f = 0; f < fc->nbFields; ++f)
    {
        PluginField const& field = fc->fields[f];
        if (field.name == nullptr)
        {
            error = std::string(mTable.opName) + ": field #" + std::to_string(f) + " has no name";
            return false;
        }
        int32_t index = -1;
        for (int32_t i = 0; i < mTable.count; ++i)
        {
            if (std::strcmp(field.name, mTable.specs[i].name) == 0)
            {
                index = i;
                break;
            }
        }
        if (index < 0)
        {
            error = std::string(mTable.opName) + ": unknown field '" + field.name + "' (known: " + knownNames(mTable)
                + ")";
            return false;
        }
        if (seen[index])
        {
            error = std::string(mTable.opName) + ": field '" + field.name + "' given twice";
            return false;
        }
        seen[index] = true;
        if (!parseOne(field, mTable.specs[index], mValues[index], error))
        {
            return false;
        }
    }
    return true;
}

PluginFieldCollection const* PluginAttributes::serialize()
{
    mFields.clear();
    for (int32_t i = 0; i < mTable.count; ++i)
    {
        AttrSpec const& spec = mTable.specs[i];
        void const* data = spec.kind == AttrKind::kInt ? static_cast<void const*>(&mValues[i].i)
                                                       : static_cast<void const*>(&mValues[i].f);
        mFields.emplace_back(spec.name, data, serialType(spec.kind), 1);
    }
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
    return &mCollection;
}

std::string PluginAttributes::describe() const
{
    std::ostringstream os;
    for (int32_t i = 0; i < mTable.count; ++i)
    {
        os << (i ? ", " : "") << mTable.specs[i].name << "=";
        if (mTable.specs[i].kind == AttrKind::kInt)
        {
            os << mValues[i].i;
        }
        else
        {
            os << mValues[i].f;
        }
    }
    return os.str();
}

} // namespace trt
} // namespace ssi
