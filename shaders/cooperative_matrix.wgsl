// The directives of the kernels that run on cooperative matrices (tensor cores): f16
// values and wgpu's cooperative-matrix types. WGSL wants directives before any
// declaration, so the engine prepends this file first to each such kernel family.

enable f16;
enable wgpu_cooperative_matrix;
