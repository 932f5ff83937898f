# The CUDA targets (docs/CUDA.md), included at the end of custom_ops/CMakeLists.txt.
#
#   ONNX_DC_BUILD_CUDA          AUTO (default): build them when CMake finds a CUDA compiler
#                               (check_language(CUDA)); ON: require one; OFF: never.
#                               scripts/build_native.sh and the wheel build pass OFF; scripts/build_cuda.sh ON.
#   ONNX_DC_CUDA_ARCHITECTURES  default "80;90" (A100, H100/H200); e.g. -DONNX_DC_CUDA_ARCHITECTURES=90
#
# Targets:
#   onnx_dc_cuda_emulation_test  the GPU decoder's per-chunk / per-row code run on the host against the CPU
#                                reader; plain C++, no CUDA needed; built only on request
#                                (cmake --build <dir> --target onnx_dc_cuda_emulation_test)
#   onnx_dc_cuda_harness         (CUDA) the kernels against the CPU reference, and the cuBLAS benchmark
#   onnx_dc_ops_cuda             (CUDA + onnxruntime headers) libonnx_dc_ops_cuda.so: the CPU ops and
#                                DCSparseGemm for CUDAExecutionProvider, in domain onnx_dc
add_executable(onnx_dc_cuda_emulation_test EXCLUDE_FROM_ALL cuda/emulation_test.cc cuda/decode_plan.cc
               $<TARGET_OBJECTS:onnx_dc_core>)
target_include_directories(onnx_dc_cuda_emulation_test PRIVATE ${ONNX_DC_INCLUDE_DIRS} ${CMAKE_CURRENT_SOURCE_DIR}/cuda)
target_compile_options(onnx_dc_cuda_emulation_test PRIVATE ${ONNX_DC_FLAGS})
target_link_options(onnx_dc_cuda_emulation_test PRIVATE ${ONNX_DC_LINK_FLAGS})

set(ONNX_DC_BUILD_CUDA AUTO CACHE STRING "Build the CUDA targets: AUTO (when a CUDA compiler is found), ON or OFF")
set_property(CACHE ONNX_DC_BUILD_CUDA PROPERTY STRINGS AUTO ON OFF)
set(ONNX_DC_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures of the CUDA targets")

set(_onnx_dc_cuda OFF)
if(ONNX_DC_BUILD_CUDA STREQUAL "AUTO")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(_onnx_dc_cuda ON)
  else()
    message(STATUS "onnx_dc: no CUDA compiler found, the CUDA targets are skipped")
  endif()
elseif(ONNX_DC_BUILD_CUDA)
  set(_onnx_dc_cuda ON)
endif()

if(_onnx_dc_cuda)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES "${ONNX_DC_CUDA_ARCHITECTURES}")
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  message(STATUS "onnx_dc: CUDA targets ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${ONNX_DC_CUDA_ARCHITECTURES})")
  # No multiply-add contraction anywhere (device: --fmad=false; host: -ffp-contract=off): gemm.h's sums.
  set(_onnx_dc_cuda_flags $<$<COMPILE_LANGUAGE:CUDA>:--fmad=false -Xcompiler=-ffp-contract=off,-Wall,-Wextra,-Wno-psabi>
                          $<$<COMPILE_LANGUAGE:CXX>:${ONNX_DC_FLAGS}>)
  add_library(onnx_dc_cuda_core OBJECT cuda/dc_cuda.cu cuda/decode_plan.cc)
  target_include_directories(onnx_dc_cuda_core PUBLIC ${ONNX_DC_INCLUDE_DIRS} ${CMAKE_CURRENT_SOURCE_DIR}/cuda)
  target_link_libraries(onnx_dc_cuda_core PUBLIC CUDA::cudart_static)
  target_compile_options(onnx_dc_cuda_core PRIVATE ${_onnx_dc_cuda_flags})
  set_target_properties(onnx_dc_cuda_core PROPERTIES CUDA_ARCHITECTURES "${ONNX_DC_CUDA_ARCHITECTURES}")

  add_executable(onnx_dc_cuda_harness cuda/harness.cu $<TARGET_OBJECTS:onnx_dc_cuda_core> $<TARGET_OBJECTS:onnx_dc_core>)
  target_include_directories(onnx_dc_cuda_harness PRIVATE ${ONNX_DC_INCLUDE_DIRS} ${CMAKE_CURRENT_SOURCE_DIR}/cuda)
  target_compile_options(onnx_dc_cuda_harness PRIVATE ${_onnx_dc_cuda_flags})
  target_link_libraries(onnx_dc_cuda_harness PRIVATE CUDA::cudart_static ${CMAKE_DL_LIBS})
  set_target_properties(onnx_dc_cuda_harness PROPERTIES CUDA_ARCHITECTURES "${ONNX_DC_CUDA_ARCHITECTURES}")

  if(ONNX_DC_BUILD_ORT_LIBRARY)
    add_library(onnx_dc_ops_cuda SHARED src/register.cc cuda/ort_cuda_op.cc $<TARGET_OBJECTS:onnx_dc_ort_ops>
                $<TARGET_OBJECTS:onnx_dc_cuda_core> $<TARGET_OBJECTS:onnx_dc_core>)
    onnx_dc_ort_library(onnx_dc_ops_cuda)
    target_compile_definitions(onnx_dc_ops_cuda PRIVATE ONNX_DC_WITH_CUDA)
    target_include_directories(onnx_dc_ops_cuda PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/cuda)
    target_link_libraries(onnx_dc_ops_cuda PRIVATE CUDA::cudart_static)
  endif()
endif()
