# ccn/native/cuda/cuda.cmake: the CUDA backend, included by the top-level CMakeLists.txt
# when a CUDA compiler is found (or CCN_CUDA=ON).
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  # Hopper (H100/H200) by default; -DCMAKE_CUDA_ARCHITECTURES=native builds for the GPU at hand.
  set(CMAKE_CUDA_ARCHITECTURES 90)
endif()
enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
find_package(CUDAToolkit REQUIRED)

# cuBLAS: from the toolkit, else from the pip package nvidia-cublas (nvidia/cu*/).
set(CCN_CUBLAS_TARGET "")
if(TARGET CUDA::cublas AND EXISTS "${CUDAToolkit_LIBRARY_DIR}/libcublas.so")
  set(CCN_CUBLAS_TARGET CUDA::cublas)
  message(STATUS "ccn: cuBLAS from the CUDA toolkit")
else()
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
      "import glob, os, nvidia; d = [p for p in glob.glob(os.path.join(list(nvidia.__path__)[0], 'cu*')) if os.path.exists(os.path.join(p, 'include', 'cublas_v2.h'))]; print(sorted(d)[-1])"
    OUTPUT_VARIABLE _cublas_root OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _cublas_rc ERROR_QUIET)
  if(_cublas_rc EQUAL 0 AND _cublas_root)
    file(GLOB _cublas_lib "${_cublas_root}/lib/libcublas.so*")
    list(GET _cublas_lib 0 _cublas_lib)
    add_library(ccn_cublas INTERFACE)
    target_include_directories(ccn_cublas INTERFACE "${_cublas_root}/include")
    target_link_libraries(ccn_cublas INTERFACE "${_cublas_lib}")
    set(CCN_CUBLAS_TARGET ccn_cublas)
    message(STATUS "ccn: cuBLAS from pip (${_cublas_root})")
  else()
    message(STATUS "ccn: cuBLAS not found (toolkit or pip nvidia-cublas); GPU GEMM layers are not built")
  endif()
endif()

file(GLOB_RECURSE CCN_CUDA_SOURCES CONFIGURE_DEPENDS native/*.cu)
add_library(ccn_cuda OBJECT ${CCN_CUDA_SOURCES})
target_include_directories(ccn_cuda PUBLIC native)
target_link_libraries(ccn_cuda PUBLIC CUDA::cudart)
if(CCN_CUBLAS_TARGET)
  target_link_libraries(ccn_cuda PUBLIC ${CCN_CUBLAS_TARGET})
  target_compile_definitions(ccn_cuda PUBLIC CCN_HAVE_CUBLAS=1)
endif()
set_target_properties(ccn_cuda PROPERTIES CUDA_SEPARABLE_COMPILATION OFF)
message(STATUS "ccn: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
