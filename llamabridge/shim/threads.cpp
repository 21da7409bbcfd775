// Implementation of bridge.h's compute-thread release: ggml's CPU backend computes on OpenMP teams.
//
// libgomp keeps each thread's team alive after its parallel region, and once the process holds more OpenMP
// threads than it has CPUs it "throttles": every thread waiting at a barrier sleeps on a futex after about 100
// spins instead of spinning, which ggml meets at every node of every graph. The weights' conversion at load
// (the AMX and repacked CPU buffers) runs a parallel region on the loading thread; a cache's worker then
// computes on a second team, and on a 2-core machine one stream decoded at half llama-bench's speed
// (llama.cpp's own tools load and decode on one thread). So the loading thread, and a worker that goes idle,
// hand their team back: omp_pause_resource on the host device frees the calling thread's pool (libgomp,
// OpenMP 5.0). OpenMP is looked up where ggml loaded it, not linked: a build without it has nothing to free.
#include "bridge.h"

#include <dlfcn.h>

namespace lb {

namespace {

using omp_pause_resource_fn = int (*)(int kind, int device_num);
using omp_get_initial_device_fn = int (*)();
constexpr int omp_pause_soft = 1;

struct OpenMP {
    omp_pause_resource_fn pause = nullptr;
    omp_get_initial_device_fn initial_device = nullptr;
};

const OpenMP & openmp() {
    static const OpenMP found = [] {
        OpenMP omp;
        for (const char * name : {"libgomp.so.1", "libomp.so", "libomp.so.5", "libiomp5.so", "libomp.dylib"}) {
            void * lib = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);   // only one already loaded (by ggml-cpu)
            if (lib == nullptr) {
                continue;
            }
            omp.pause = reinterpret_cast<omp_pause_resource_fn>(dlsym(lib, "omp_pause_resource"));
            omp.initial_device = reinterpret_cast<omp_get_initial_device_fn>(dlsym(lib, "omp_get_initial_device"));
            if (omp.pause != nullptr && omp.initial_device != nullptr) {
                break;
            }
            omp = OpenMP{};
        }
        return omp;
    }();
    return found;
}

}  // namespace

bool release_compute_threads() {
    const OpenMP & omp = openmp();
    return omp.pause != nullptr && omp.pause(omp_pause_soft, omp.initial_device()) == 0;
}

}  // namespace lb
