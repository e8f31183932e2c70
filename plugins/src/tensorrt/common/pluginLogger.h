// Logging of the SSI TensorRT plugin library through the logger TensorRT hands over with
// setLoggerFinder(). The finder, or the logger it finds, may be null (outside a build or a
// run): messages then go to stderr so that an error never vanishes silently.
#pragma once

#include <NvInferRuntime.h>

#include <string>

namespace ssi
{
namespace trt
{

//! Remember the finder TensorRT passes to the exported setLoggerFinder(); null is ignored.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Log one message at the given severity, prefixed with "ssi plugins: ".
void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

inline void logError(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, message);
}

inline void logWarning(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kWARNING, message);
}

} // namespace trt
} // namespace ssi
