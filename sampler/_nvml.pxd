# Declarations of include/gpuprof_nvml.h: the part of the NVML ABI the native sampler resolves with dlsym.

cdef extern from "gpuprof_nvml.h" nogil:
    ctypedef int nvmlReturn_t
    # Opaque to gpuprof: only stored and passed back, so Cython may see it as a plain pointer.
    ctypedef void* nvmlDevice_t

    enum:
        NVML_SUCCESS
        NVML_ERROR_UNINITIALIZED
        NVML_ERROR_INVALID_ARGUMENT
        NVML_ERROR_NOT_SUPPORTED
        NVML_ERROR_NO_PERMISSION
        NVML_ERROR_ALREADY_INITIALIZED
        NVML_ERROR_NOT_FOUND
        NVML_ERROR_INSUFFICIENT_SIZE
        NVML_ERROR_INSUFFICIENT_POWER
        NVML_ERROR_DRIVER_NOT_LOADED
        NVML_ERROR_TIMEOUT
        NVML_ERROR_IRQ_ISSUE
        NVML_ERROR_LIBRARY_NOT_FOUND
        NVML_ERROR_FUNCTION_NOT_FOUND
        NVML_ERROR_CORRUPTED_INFOROM
        NVML_ERROR_GPU_IS_LOST
        NVML_ERROR_RESET_REQUIRED
        NVML_ERROR_OPERATING_SYSTEM
        NVML_ERROR_LIB_RM_VERSION_MISMATCH
        NVML_ERROR_IN_USE
        NVML_ERROR_MEMORY
        NVML_ERROR_NO_DATA
        NVML_ERROR_UNKNOWN

        NVML_CLOCK_GRAPHICS
        NVML_CLOCK_SM
        NVML_CLOCK_MEM
        NVML_CLOCK_VIDEO
        NVML_TEMPERATURE_GPU

        NVML_TOTAL_POWER_SAMPLES

        NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION
        NVML_FI_DEV_POWER_INSTANT
        NVML_FI_DEV_POWER_AVERAGE
        NVML_POWER_SCOPE_MEMORY

        NVML_VALUE_TYPE_DOUBLE
        NVML_VALUE_TYPE_UNSIGNED_INT
        NVML_VALUE_TYPE_UNSIGNED_LONG
        NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
        NVML_VALUE_TYPE_SIGNED_LONG_LONG

        NVML_DEVICE_NAME_BUFFER_SIZE
        NVML_DEVICE_UUID_BUFFER_SIZE
        NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE
        NVML_SYSTEM_NVML_VERSION_BUFFER_SIZE

    # Clock-event reason bits (unsigned long long macros).
    const unsigned long long NVML_CLOCKS_EVENT_REASON_GPU_IDLE
    const unsigned long long NVML_CLOCKS_EVENT_REASON_APPLICATIONS_CLOCKS_SETTING
    const unsigned long long NVML_CLOCKS_EVENT_REASON_SW_POWER_CAP
    const unsigned long long NVML_CLOCKS_EVENT_REASON_HW_SLOWDOWN
    const unsigned long long NVML_CLOCKS_EVENT_REASON_SYNC_BOOST
    const unsigned long long NVML_CLOCKS_EVENT_REASON_SW_THERMAL_SLOWDOWN
    const unsigned long long NVML_CLOCKS_EVENT_REASON_HW_THERMAL_SLOWDOWN
    const unsigned long long NVML_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN
    const unsigned long long NVML_CLOCKS_EVENT_REASON_DISPLAY_CLOCK_SETTING

    ctypedef union nvmlValue_t:
        double dVal
        int siVal
        unsigned int uiVal
        unsigned long ulVal
        unsigned long long ullVal
        signed long long sllVal
        unsigned short usVal

    ctypedef struct nvmlFieldValue_t:
        unsigned int fieldId
        unsigned int scopeId
        long long timestamp
        long long latencyUsec
        int valueType
        nvmlReturn_t nvmlReturn
        nvmlValue_t value

    ctypedef struct nvmlSample_t:
        unsigned long long timeStamp
        nvmlValue_t sampleValue

    ctypedef struct nvmlUtilization_t:
        unsigned int gpu
        unsigned int memory

    ctypedef nvmlReturn_t (*nvmlInit_v2_fn)() noexcept nogil
    ctypedef nvmlReturn_t (*nvmlShutdown_fn)() noexcept nogil
    ctypedef const char* (*nvmlErrorString_fn)(nvmlReturn_t) noexcept nogil
    ctypedef nvmlReturn_t (*nvmlDeviceGetCount_v2_fn)(unsigned int*) noexcept nogil
    ctypedef nvmlReturn_t (*nvmlDeviceGetHandleByIndex_v2_fn)(unsigned int, nvmlDevice_t*) noexcept nogil
    ctypedef nvmlReturn_t (*nvmlDeviceGetFieldValues_fn)(nvmlDevice_t, int, nvmlFieldValue_t*) noexcept nogil
    ctypedef nvmlReturn_t (*nvmlDeviceGetPowerUsage_fn)(nvmlDevice_t, unsigned int*) noexcept nogil
    ctypedef nvmlReturn_t (*nvmlDeviceGetClockInfo_fn)(nvmlDevice_t, int, unsigned int*) noexcept nogil
    ctypedef nvmlReturn_t (*nvmlDeviceGetUtilizationRates_fn)(
        nvmlDevice_t, nvmlUtilization_t*) noexcept nogil
    ctypedef nvmlReturn_t (*nvmlDeviceGetTemperature_fn)(nvmlDevice_t, int, unsigned int*) noexcept nogil
    ctypedef nvmlReturn_t (*nvmlDeviceGetCurrentClocksEventReasons_fn)(
        nvmlDevice_t, unsigned long long*) noexcept nogil
    ctypedef nvmlReturn_t (*nvmlDeviceGetTotalEnergyConsumption_fn)(
        nvmlDevice_t, unsigned long long*) noexcept nogil
    ctypedef nvmlReturn_t (*nvmlDeviceGetSamples_fn)(
        nvmlDevice_t, int, unsigned long long, int*, unsigned int*, nvmlSample_t*) noexcept nogil
