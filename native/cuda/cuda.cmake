# ccn/native/cuda/cuda.cmake: the CUDA backend, included by the top-level CMakeLists.txt
# when a CUDA compiler is found (or CCN_CUDA=ON). Design: native/cuda/README-design.md.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  # Hopper (H100/H200) by default; -DCMAKE_CUDA_ARCHITECTURES=native builds for the GPU at hand.
  set(CMAKE_CUDA_ARCHITECTURES 90)
endif()
enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
find_package(CUDAToolkit REQUIRED)

# cuBLAS is NOT linked: native/cuda/cublas.cu loads it at run time (dlopen), so every
# machine with nvcc compiles the same sources, with or without cuBLAS installed.
file(GLOB_RECURSE CCN_CUDA_SOURCES CONFIGURE_DEPENDS native/*.cu)
add_library(ccn_cuda OBJECT ${CCN_CUDA_SOURCES})
target_include_directories(ccn_cuda PUBLIC native)
# The static runtime: the extension then needs only the driver (libcuda) at run time.
target_link_libraries(ccn_cuda PUBLIC CUDA::cudart_static ${CMAKE_DL_LIBS})
target_compile_definitions(ccn_cuda PUBLIC CCN_WITH_CUDA=1)
target_compile_options(ccn_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter>)
set_target_properties(ccn_cuda PROPERTIES CUDA_SEPARABLE_COMPILATION OFF CUDA_RUNTIME_LIBRARY Static)
# The layer files (host compiler) hold their fprop_cuda/bprop_cuda under CCN_WITH_CUDA.
target_compile_definitions(ccn_cpu PUBLIC CCN_WITH_CUDA=1)
message(STATUS "ccn: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}; "
               "cuBLAS is loaded at run time)")
