#include "common/pluginLogger.h"

#include <cstdio>
#include <mutex>

namespace ssi
{
namespace trt
{
namespace
{

std::mutex gMutex;
nvinfer1::ILoggerFinder* gFinder{nullptr};

char const* severityName(nvinfer1::ILogger::Severity s) noexcept
{
    switch (s)
    {
    case nvinfer1::ILogger::Severity::kINTERNAL_ERROR: return "internal error";
    case nvinfer1::ILogger::Severity::kERROR: return "error";
    case nvinfer1::ILogger::Severity::kWARNING: return "warning";
    case nvinfer1::ILogger::Severity::kINFO: return "info";
    case nvinfer1::ILogger::Severity::kVERBOSE: return "verbose";
    }
    return "log";
}

} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    if (finder == nullptr)
    {
        return;
    }
    std::lock_guard<std::mutex> lock(gMutex);
    gFinder = finder;
}

void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::string const text = "ssi plugins: " + message;
        nvinfer1::ILogger* logger{nullptr};
        {
            std::lock_guard<std::mutex> lock(gMutex);
            if (gFinder != nullptr)
            {
                logger = gFinder->findLogger();
            }
        }
        if (logger != nullptr)
        {
            logger->log(severity, text.c_str());
        }
        else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
        {
            std::fprintf(stderr, "[%s] %s\n", severityName(severity), text.c_str());
        }
    }
    catch (...)
    {
        // Logging must never throw out of a noexcept TensorRT entry point.
    }
}

} // namespace trt
} // namespace ssi
