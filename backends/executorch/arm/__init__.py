"""Run a .pte on emulated phone CPUs: the native pte_runner under qemu-aarch64, per CPU model.

No phone is needed to check that an ExecuTorch program computes the same thing on Arm as on this
host. `android_runner/native/pte_runner.cpp`, cross-built against PyPI's linux-aarch64 executorch
wheel (the same ExecuTorch and XNNPACK as the host wheel), runs under qemu-aarch64 user-mode with
`-cpu MODEL`. XNNPACK picks its GEMM micro-kernels from the CPU features the emulated CPU reports
(getauxval HWCAP/HWCAP2 through cpuinfo), so each model of `CPU_MATRIX` runs the kernel family a
real phone core with that ISA would run. Emulated time is not latency: the numbers here are for
correctness only.

Which kernels ran is **observed**, not assumed: with `-d in_asm` qemu logs the guest address of
every translated block; those addresses, minus the load address the runner prints, fall inside
the exported symbols of libexecutorch_backend_xnnpack.so, which include all KleidiAI `kai_run_*`
kernels. XNNPACK's own `qd8_f32_qc8w` kernels (used when the CPU has no dotprod) are hidden
symbols; for those the family is **inferred** from the CPU features by XNNPACK's
`src/configs/gemm-config.c`, and the report says so.

Toolchain (installed by `scripts/install.sh`, each part optional): Debian's g++-aarch64-linux-gnu
(also the sysroot /usr/aarch64-linux-gnu), Debian trixie's static qemu-aarch64 10.x, the runner
built by `android_runner/native/build.sh`.

The package, a module per concern: `cpus` (the CPU models and the kernel families each runs),
`toolchain` (qemu, sysroot, building pte_runner), `runner` (running a program, traced or not),
`kernels` (which kernels ran, from the trace), `verification` (the bounded check and its report).
"""
from .cpus import CPU_MATRIX, DEFAULT_CPUS, KAI_INT4_GEMMS, KAI_INT8_GEMMS, CpuModel, expected_int8_gemm
from .kernels import XNNPACK_LIB, elf_functions, kernel_report, trace_functions
from .runner import ArmTimeout, run_native
from .toolchain import (BUILD_SCRIPT, QEMU_KNOWN_BAD, QEMU_MAJOR, ArmToolchain, build_runner, check_qemu,
                        find_toolchain, native_dir, qemu_version)
from .verification import SCHEMA, TRACE_SHARE, arm_verification, format_table

__all__ = ["ArmTimeout", "ArmToolchain", "BUILD_SCRIPT", "CPU_MATRIX", "CpuModel", "DEFAULT_CPUS", "KAI_INT4_GEMMS",
           "KAI_INT8_GEMMS", "QEMU_KNOWN_BAD", "QEMU_MAJOR", "SCHEMA", "TRACE_SHARE", "XNNPACK_LIB", "arm_verification",
           "build_runner", "check_qemu", "elf_functions", "expected_int8_gemm", "find_toolchain", "format_table",
           "kernel_report", "native_dir", "qemu_version", "run_native", "trace_functions"]
