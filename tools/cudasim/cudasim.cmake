# tools/cudasim/cudasim.cmake: the CUDA backend built for the CPU simulator (CCN_CUDA=SIM),
# included by the top-level CMakeLists.txt. Each native/**.cu is rewritten by transform.py
# (launches become calls) and compiled as C++ against tools/cudasim/include; the runtime and
# cuBLAS calls come from libccnsim_rt.so (runtime.cpp), next to the extension.
set(_sim "${CMAKE_CURRENT_SOURCE_DIR}/tools/cudasim")
add_library(ccnsim_rt SHARED "${_sim}/runtime.cpp")
target_include_directories(ccnsim_rt PUBLIC "${_sim}/include")
target_compile_options(ccnsim_rt PRIVATE -U_FORTIFY_SOURCE -Wall)
target_link_libraries(ccnsim_rt PRIVATE ccn_blas)  # cublasSgemm's product

file(GLOB_RECURSE _cu_sources CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/native/*.cu")
set(_gen_sources "")
foreach(_cu ${_cu_sources})
  file(RELATIVE_PATH _rel "${CMAKE_CURRENT_SOURCE_DIR}" "${_cu}")
  string(REPLACE "/" "_" _flat "${_rel}")
  set(_out "${CMAKE_CURRENT_BINARY_DIR}/cudasim/${_flat}.cpp")
  add_custom_command(OUTPUT "${_out}"
    COMMAND "${Python_EXECUTABLE}" "${_sim}/transform.py" "${_cu}" "${_out}" "${_rel}"
    DEPENDS "${_cu}" "${_sim}/transform.py"
    COMMENT "cudasim: ${_rel}")
  list(APPEND _gen_sources "${_out}")
endforeach()
add_library(ccn_cuda OBJECT ${_gen_sources})
target_include_directories(ccn_cuda PUBLIC native "${_sim}/include")
target_link_libraries(ccn_cuda PUBLIC ccnsim_rt ${CMAKE_DL_LIBS})
target_compile_definitions(ccn_cuda PUBLIC CCN_WITH_CUDA=1)
target_compile_options(ccn_cuda PRIVATE -Wall -Wno-unused-parameter -Wno-unknown-pragmas -Wno-sign-compare -g)
# Contraction as nvcc's default (--fmad=true): a*b+c may become one fused multiply-add, and only
# the __f*_rn intrinsics stay separate roundings (include/cuda_runtime.h), so a kernel that must
# match the CPU bit for bit and lacks them fails here as on a GPU.
include(CheckCXXCompilerFlag)
check_cxx_compiler_flag(-mfma CCNSIM_HAVE_MFMA)
if(CCNSIM_HAVE_MFMA AND CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  target_compile_options(ccn_cuda PRIVATE -ffp-contract=fast -mfma)
else()
  target_compile_options(ccn_cuda PRIVATE -ffp-contract=fast)
endif()
target_compile_definitions(ccn_cpu PUBLIC CCN_WITH_CUDA=1)
message(STATUS "ccn: CUDA backend on the CPU simulator (tools/cudasim; a test build, not for use)")
