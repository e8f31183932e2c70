// Test doubles of TensorRT's build-time objects, for host-only tests of the SSI plugins
// without libnvinfer: dimension expressions and their builder (IExprBuilder wraps
// apiv::VExprBuilder through its protected mImpl), a logger that records messages, and a
// logger finder that can also return null.
#pragma once

#include <NvInferImpl.h>
#include <NvInferRuntime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ssitest
{

//! Values of the symbols of an expression.
using Bindings = std::map<std::string, int64_t>;

//! A dimension expression: a constant, a named symbol, or an operation on two expressions.
class Expr final : public nvinfer1::IDimensionExpr
{
public:
    enum class Kind
    {
        kConstant,
        kSymbol,
        kOperation
    };

    explicit Expr(int64_t value)
        : mKind(Kind::kConstant)
        , mValue(value)
    {
        mImpl = &mVImpl;
    }
    explicit Expr(std::string symbol)
        : mKind(Kind::kSymbol)
        , mSymbol(std::move(symbol))
    {
        mImpl = &mVImpl;
    }
    Expr(nvinfer1::DimensionOperation op, Expr const* a, Expr const* b)
        : mKind(Kind::kOperation)
        , mOp(op)
        , mA(a)
        , mB(b)
    {
        mImpl = &mVImpl;
    }
    ~Expr() override = default;

    bool constant() const
    {
        return mKind == Kind::kConstant || (mKind == Kind::kOperation && mA->constant() && mB->constant());
    }

    //! Value under `bindings`; throws if a symbol is unbound or a division is by zero.
    int64_t eval(Bindings const& bindings) const
    {
        switch (mKind)
        {
        case Kind::kConstant: return mValue;
        case Kind::kSymbol:
        {
            auto it = bindings.find(mSymbol);
            if (it == bindings.end())
            {
                throw std::runtime_error("unbound symbol " + mSymbol);
            }
            return it->second;
        }
        case Kind::kOperation: break;
        }
        int64_t const a = mA->eval(bindings);
        int64_t const b = mB->eval(bindings);
        using Op = nvinfer1::DimensionOperation;
        switch (mOp)
        {
        case Op::kSUM: return a + b;
        case Op::kPROD: return a * b;
        case Op::kMAX: return a > b ? a : b;
        case Op::kMIN: return a < b ? a : b;
        case Op::kSUB: return a - b;
        case Op::kEQUAL: return a == b ? 1 : 0;
        case Op::kLESS: return a < b ? 1 : 0;
        case Op::kFLOOR_DIV:
        case Op::kCEIL_DIV:
        {
            if (b == 0)
            {
                throw std::runtime_error("division by zero in a dimension expression");
            }
            int64_t q = a / b;
            int64_t const r = a % b;
            if (mOp == Op::kFLOOR_DIV && r != 0 && ((r < 0) != (b < 0)))
            {
                --q;
            }
            if (mOp == Op::kCEIL_DIV && r != 0 && ((r < 0) == (b < 0)))
            {
                ++q;
            }
            return q;
        }
        }
        throw std::runtime_error("unknown dimension operation");
    }

    Kind kind() const
    {
        return mKind;
    }

private:
    struct VImpl final : nvinfer1::apiv::VDimensionExpr
    {
        explicit VImpl(Expr const* self)
            : mSelf(self)
        {
        }
        bool isConstant() const override
        {
            return mSelf->constant();
        }
        int64_t getConstantValue() const override
        {
            return mSelf->constant() ? mSelf->eval({}) : -1;
        }
        bool isSizeTensor() const override
        {
            return false;
        }
        Expr const* mSelf;
    };

    Kind mKind;
    int64_t mValue{0};
    std::string mSymbol;
    nvinfer1::DimensionOperation mOp{nvinfer1::DimensionOperation::kSUM};
    Expr const* mA{nullptr};
    Expr const* mB{nullptr};
    VImpl mVImpl{this};
};

//! IExprBuilder over Expr; owns every expression it made. Counts foreign operands
//! (expressions it did not make), which a correct plugin never passes.
class ExprBuilder final : public nvinfer1::IExprBuilder
{
public:
    ExprBuilder()
    {
        mImpl = &mVImpl;
    }
    ~ExprBuilder() override = default;

    Expr const* symbol(std::string const& name)
    {
        mPool.push_back(std::make_unique<Expr>(name));
        return mPool.back().get();
    }
    Expr const* make(int64_t value)
    {
        mPool.push_back(std::make_unique<Expr>(value));
        return mPool.back().get();
    }
    //! The Expr behind an IDimensionExpr this builder made, or null.
    Expr const* owned(nvinfer1::IDimensionExpr const* e) const
    {
        for (auto const& p : mPool)
        {
            if (p.get() == e)
            {
                return p.get();
            }
        }
        return nullptr;
    }
    int32_t foreignOperands() const
    {
        return mForeign;
    }

private:
    struct VImpl final : nvinfer1::apiv::VExprBuilder
    {
        explicit VImpl(ExprBuilder* self)
            : mSelf(self)
        {
        }
        nvinfer1::IDimensionExpr const* constant(int64_t value) override
        {
            return mSelf->make(value);
        }
        nvinfer1::IDimensionExpr const* operation(nvinfer1::DimensionOperation op,
            nvinfer1::IDimensionExpr const& first, nvinfer1::IDimensionExpr const& second) override
        {
            Expr const* a = mSelf->owned(&first);
            Expr const* b = mSelf->owned(&second);
            if (a == nullptr || b == nullptr)
            {
                ++mSelf->mForeign;
                return nullptr;
            }
            mSelf->mPool.push_back(std::make_unique<Expr>(op, a, b));
            return mSelf->mPool.back().get();
        }
        nvinfer1::IDimensionExpr const* declareSizeTensor(
            int32_t, nvinfer1::IDimensionExpr const&, nvinfer1::IDimensionExpr const&) override
        {
            return nullptr; // SSI plugins have no size tensors
        }
        ExprBuilder* mSelf;
    };

    std::vector<std::unique_ptr<Expr>> mPool;
    int32_t mForeign{0};
    VImpl mVImpl{this};
};

//! Records every message.
class RecordingLogger final : public nvinfer1::ILogger
{
public:
    struct Message
    {
        Severity severity;
        std::string text;
    };
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        mMessages.push_back({severity, msg != nullptr ? msg : ""});
    }
    std::vector<Message> const& messages() const
    {
        return mMessages;
    }
    void clear()
    {
        mMessages.clear();
    }
    //! Some error message contains every one of `parts`.
    bool hasError(std::vector<std::string> const& parts) const
    {
        for (auto const& m : mMessages)
        {
            if (m.severity > Severity::kERROR)
            {
                continue;
            }
            bool all = true;
            for (auto const& p : parts)
            {
                all = all && m.text.find(p) != std::string::npos;
            }
            if (all)
            {
                return true;
            }
        }
        return false;
    }
    size_t errorCount() const
    {
        size_t n = 0;
        for (auto const& m : mMessages)
        {
            n += m.severity <= Severity::kERROR ? 1 : 0;
        }
        return n;
    }

private:
    std::vector<Message> mMessages;
};

//! Finds `logger`, which may be set to null to mimic TensorRT outside a build or run.
class SwitchableLoggerFinder final : public nvinfer1::ILoggerFinder
{
public:
    nvinfer1::ILogger* findLogger() override
    {
        return logger;
    }
    nvinfer1::ILogger* logger{nullptr};
};

} // namespace ssitest
