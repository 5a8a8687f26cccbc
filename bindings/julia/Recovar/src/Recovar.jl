"""
    Recovar

Julia bindings of librecovar, the C ABI of RECOVAR (regularized covariance estimation and
kernel-regression volume generation for cryo-EM heterogeneity), through `ccall`.

Two layers:

- the raw layer: one Julia function per C function, with the C name (`rcv_dataset_open`,
  `rcv_model_run_stage`, ...) and exactly the C signature of `include/recovar.h`
  (`ffi/tests/julia_signatures.rs` checks every `ccall` here against the header);
- the Julia layer: [`Dataset`](@ref), [`Model`](@ref) and [`Volume`](@ref) own one handle
  each (freed by a finalizer, or at once by `close`), take and return Julia arrays, and throw
  [`RecovarError`](@ref) with the library's message on failure.

# Array layout

The C API uses C order (last index fastest). Julia is column-major, so the same memory read
as a Julia array has its indices reversed; no copy or `permutedims` is needed:

| data          | C (row-major)             | Julia array                                     |
|---------------|---------------------------|-------------------------------------------------|
| volume        | `vol[z][y][x]`, N×N×N     | `Array{Float32,3}` of size (N, N, N), `v[x, y, z]` (as MRC files are read in Julia) |
| images        | `img[i][y][x]`, n×D×D     | size (D, D, n), `images[x, y, i]`               |
| translations  | `t[i][k]`, n×2 (pixels)   | size (2, n), `t[:, i]` = (x, y) shift of image i |
| CTF           | `ctf[i][k]`, n×9          | size (9, n), `ctf[:, i]` = row i of a cryoDRGN ctf.pkl |
| embedding     | `z[i][k]`, rows×zdim      | size (zdim, rows), `zs[:, i]` = latent point of image i |
| precisions    | `p[i][a][b]`              | size (zdim, zdim, rows) (symmetric matrices)    |

Rotations are the exception: [`Dataset`](@ref) takes them as a (3, 3, n) array with
`rotations[:, :, i]` the rotation matrix of image i in the usual mathematical orientation
(cryoDRGN convention), and transposes them into the row-major layout of the C API.

To get C-order (z, y, x) indexing instead, use `permutedims(v, (3, 2, 1))`.

# The library

`librecovar` is looked up, in order, in the file or folder named by `ENV["RECOVAR_LIB"]`
(at package load), in `\$CARGO_TARGET_DIR/release`, in the repository's `target/release`
(when the package is used from the source tree), and in the system library path. Build it
with `cargo build --release`.
"""
module Recovar

using Libdl

export RecovarError, Dataset, Model, Volume
export version, abi_version, status_name
export total_in_file, box_size, voxel_size, n_images
export load_model, device_note, run_stage!, stage_done, save, mean_volume, noise_profile, n_eigen,
       eigenvalues, eigenvolume, variance_map, zdims, embedding, generate
export volume_data, write_mrc, read_embedding, generate_from_embedding

# ---------------------------------------------------------------------------------------
# Constants of recovar.h (checked against the header by ffi/tests/julia_signatures.rs)

const RCV_VERSION_MAJOR = 0
const RCV_VERSION_MINOR = 1
const RCV_VERSION_PATCH = 0
const RCV_ABI_VERSION = 1

const RCV_DATASET_REQUIRE_POSES = UInt32(1)
const RCV_DATASET_REQUIRE_CTF = UInt32(2)
const RCV_DATASET_PRELOAD = UInt32(4)

const RCV_UNINVERT_AUTOMATIC = Int32(0)
const RCV_UNINVERT_TRUE = Int32(1)
const RCV_UNINVERT_FALSE = Int32(2)

# rcv_status
const RCV_OK = Cint(0)
const RCV_ERR_INVALID_ARGUMENT = Cint(-1)
const RCV_ERR_IO = Cint(-2)
const RCV_ERR_FORMAT = Cint(-3)
const RCV_ERR_NOT_FOUND = Cint(-4)
const RCV_ERR_INCONSISTENT = Cint(-5)
const RCV_ERR_CANCELLED = Cint(-6)
const RCV_ERR_INTERNAL = Cint(-7)
const RCV_ERR_DEVICE = Cint(-8)

# rcv_stage
const RCV_STAGE_MEAN = Cint(0)
const RCV_STAGE_NOISE = Cint(1)
const RCV_STAGE_COVARIANCE = Cint(2)
const RCV_STAGE_EMBEDDING = Cint(3)
const RCV_STAGE_ALL = Cint(4)

# rcv_volume_kind
const RCV_VOLUME_FILTERED = Cint(0)
const RCV_VOLUME_UNFILTERED = Cint(1)
const RCV_VOLUME_HALF1 = Cint(2)
const RCV_VOLUME_HALF2 = Cint(3)
const RCV_VOLUME_FILTERED_NO_BFACTOR = Cint(4)
const RCV_VOLUME_LOCAL_RESOLUTION = Cint(5)

# rcv_model_options fields
const RCV_MASK_FROM_HALFMAPS = Int32(0)
const RCV_MASK_SPHERE = Int32(1)
const RCV_MASK_NONE = Int32(2)
const RCV_MASK_FILE = Int32(3)
const RCV_NOISE_RADIAL = Int32(0)
const RCV_NOISE_WHITE = Int32(1)
const RCV_MEMORY_NORMAL = Int32(0)
const RCV_MEMORY_LOW = Int32(1)
const RCV_MEMORY_VERY_LOW = Int32(2)

# device of rcv_model_options / rcv_kernel_options
const RCV_DEVICE_AUTO = Int32(0)
const RCV_DEVICE_CPU = Int32(1)
const RCV_DEVICE_CUDA = Int32(2)

# ---------------------------------------------------------------------------------------
# Locating librecovar

# ccall resolves this name through Libdl.DL_LOAD_PATH (filled by __init__) and then the
# system library path.
const librecovar = "librecovar"

const _REPO_TARGET = normpath(joinpath(@__DIR__, "..", "..", "..", "..", "target", "release"))

function _library_dirs()
    dirs = String[]
    lib = get(ENV, "RECOVAR_LIB", "")
    if !isempty(lib)
        if isdir(lib)
            push!(dirs, abspath(lib))
        elseif isfile(lib)
            base = basename(lib)
            startswith(base, librecovar * ".") || error(
                "RECOVAR_LIB=$lib: name the file librecovar.$(Libdl.dlext) or the folder holding it")
            push!(dirs, dirname(abspath(lib)))
        else
            error("RECOVAR_LIB=$lib does not exist (build the library with `cargo build --release`)")
        end
    end
    target = get(ENV, "CARGO_TARGET_DIR", "")
    isempty(target) || push!(dirs, joinpath(abspath(target), "release"))
    push!(dirs, _REPO_TARGET)
    return filter(isdir, dirs)
end

function __init__()
    for d in reverse(_library_dirs())
        d in Libdl.DL_LOAD_PATH || pushfirst!(Libdl.DL_LOAD_PATH, d)
    end
    if Libdl.dlopen_e(librecovar) == C_NULL
        @warn "librecovar not found: set ENV[\"RECOVAR_LIB\"] to librecovar.$(Libdl.dlext) (built by `cargo build --release`) before loading Recovar"
    elseif rcv_abi_version() != RCV_ABI_VERSION
        @warn "librecovar has ABI $(rcv_abi_version()) but Recovar.jl was written for ABI $RCV_ABI_VERSION; rebuild or update the package"
    end
    return nothing
end

# ---------------------------------------------------------------------------------------
# C structs (field for field as in recovar.h; mutable so that `Ref` passes their address)

mutable struct rcv_dataset_options
    struct_size::Csize_t
    particles::Ptr{UInt8}
    poses::Ptr{UInt8}
    ctf::Ptr{UInt8}
    datadir::Ptr{UInt8}
    ind::Ptr{UInt8}
    halfsets::Ptr{UInt8}
    n_images::UInt64
    seed::UInt64
    uninvert::Int32
    flags::UInt32
end
rcv_dataset_options() = rcv_dataset_options(0, C_NULL, C_NULL, C_NULL, C_NULL, C_NULL, C_NULL, 0, 0, 0, 0)

mutable struct rcv_model_options
    struct_size::Csize_t
    mask_kind::Int32
    mask_path::Ptr{UInt8}
    focus_mask::Ptr{UInt8}
    noise_model::Int32
    zdims::Ptr{Csize_t}
    n_zdims::Csize_t
    correct_contrast::Int32
    ignore_zero_frequency::Int32
    memory_option::Int32
    use_image_mask::Int32
    memory_budget::UInt64
    seed::UInt64
    device::Int32
    device_index::Int32
end
rcv_model_options() = rcv_model_options(0, 0, C_NULL, C_NULL, 0, C_NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0)

mutable struct rcv_kernel_options
    struct_size::Csize_t
    n_bins::Csize_t
    maskrad_fraction::Cdouble
    n_min_images::Csize_t
    bfactor::Cdouble
    batch_size::Csize_t
    device::Int32
    device_index::Int32
end
rcv_kernel_options() = rcv_kernel_options(0, 0, 0.0, 0, 0.0, 0, 0, 0)

# ---------------------------------------------------------------------------------------
# The raw layer: one function per C function, same name, same argument order.
# Handles are Ptr{Cvoid}; a Julia handle object (Dataset, Model, Volume) may be passed
# instead, and stays alive during the call.

rcv_version() = ccall((:rcv_version, librecovar), Cstring, ())
rcv_abi_version() = ccall((:rcv_abi_version, librecovar), UInt32, ())
rcv_last_error_message() = ccall((:rcv_last_error_message, librecovar), Cstring, ())

rcv_dataset_options_init(opts) =
    ccall((:rcv_dataset_options_init, librecovar), Cvoid, (Ref{rcv_dataset_options},), opts)
rcv_dataset_open(options, out) =
    ccall((:rcv_dataset_open, librecovar), Cint,
          (Ref{rcv_dataset_options}, Ref{Ptr{Cvoid}}), options, out)
rcv_dataset_create(images, images_len, n_images, box_size, rotations, rotations_len,
                   translations, translations_len, ctf, ctf_len, seed, out) =
    ccall((:rcv_dataset_create, librecovar), Cint,
          (Ptr{Float32}, Csize_t, Csize_t, Csize_t, Ptr{Float32}, Csize_t, Ptr{Float32},
           Csize_t, Ptr{Cdouble}, Csize_t, UInt64, Ref{Ptr{Cvoid}}),
          images, images_len, n_images, box_size, rotations, rotations_len, translations,
          translations_len, ctf, ctf_len, seed, out)
rcv_dataset_free(dataset) =
    ccall((:rcv_dataset_free, librecovar), Cvoid, (Ptr{Cvoid},), dataset)
rcv_dataset_count(dataset, out) =
    ccall((:rcv_dataset_count, librecovar), Cint, (Ptr{Cvoid}, Ref{Csize_t}), dataset, out)
rcv_dataset_total_in_file(dataset, out) =
    ccall((:rcv_dataset_total_in_file, librecovar), Cint, (Ptr{Cvoid}, Ref{Csize_t}),
          dataset, out)
rcv_dataset_box_size(dataset, out) =
    ccall((:rcv_dataset_box_size, librecovar), Cint, (Ptr{Cvoid}, Ref{Csize_t}), dataset, out)
rcv_dataset_voxel_size(dataset, out) =
    ccall((:rcv_dataset_voxel_size, librecovar), Cint, (Ptr{Cvoid}, Ref{Cdouble}), dataset, out)

rcv_model_options_init(opts) =
    ccall((:rcv_model_options_init, librecovar), Cvoid, (Ref{rcv_model_options},), opts)
rcv_kernel_options_init(opts) =
    ccall((:rcv_kernel_options_init, librecovar), Cvoid, (Ref{rcv_kernel_options},), opts)
rcv_model_create(dataset, options, out) =
    ccall((:rcv_model_create, librecovar), Cint,
          (Ptr{Cvoid}, Ref{rcv_model_options}, Ref{Ptr{Cvoid}}), dataset, options, out)
rcv_model_load(pipeline_dir, out) =
    ccall((:rcv_model_load, librecovar), Cint, (Cstring, Ref{Ptr{Cvoid}}), pipeline_dir, out)
rcv_model_free(model) = ccall((:rcv_model_free, librecovar), Cvoid, (Ptr{Cvoid},), model)
rcv_model_device(model, out) =
    ccall((:rcv_model_device, librecovar), Cint, (Ptr{Cvoid}, Ref{Ptr{UInt8}}), model, out)
rcv_model_run_stage(model, stage, progress, user_data) =
    ccall((:rcv_model_run_stage, librecovar), Cint, (Ptr{Cvoid}, Cint, Ptr{Cvoid}, Ptr{Cvoid}),
          model, stage, progress, user_data)
rcv_model_stage_done(model, stage, out) =
    ccall((:rcv_model_stage_done, librecovar), Cint, (Ptr{Cvoid}, Cint, Ref{Int32}),
          model, stage, out)
rcv_model_save(model, dir) =
    ccall((:rcv_model_save, librecovar), Cint, (Ptr{Cvoid}, Cstring), model, dir)
rcv_model_box_size(model, out) =
    ccall((:rcv_model_box_size, librecovar), Cint, (Ptr{Cvoid}, Ref{Csize_t}), model, out)
rcv_model_voxel_size(model, out) =
    ccall((:rcv_model_voxel_size, librecovar), Cint, (Ptr{Cvoid}, Ref{Cdouble}), model, out)
rcv_model_n_images(model, out) =
    ccall((:rcv_model_n_images, librecovar), Cint, (Ptr{Cvoid}, Ref{Csize_t}), model, out)
rcv_model_mean(model, out, len) =
    ccall((:rcv_model_mean, librecovar), Cint, (Ptr{Cvoid}, Ptr{Float32}, Csize_t),
          model, out, len)
rcv_model_noise(model, out, len) =
    ccall((:rcv_model_noise, librecovar), Cint, (Ptr{Cvoid}, Ptr{Cdouble}, Csize_t),
          model, out, len)
rcv_model_n_eigen(model, out) =
    ccall((:rcv_model_n_eigen, librecovar), Cint, (Ptr{Cvoid}, Ref{Csize_t}), model, out)
rcv_model_eigenvalues(model, out, len) =
    ccall((:rcv_model_eigenvalues, librecovar), Cint, (Ptr{Cvoid}, Ptr{Cdouble}, Csize_t),
          model, out, len)
rcv_model_eigenvolume(model, k, out, len) =
    ccall((:rcv_model_eigenvolume, librecovar), Cint,
          (Ptr{Cvoid}, Csize_t, Ptr{Float32}, Csize_t), model, k, out, len)
rcv_model_variance_map(model, n_components, out, len) =
    ccall((:rcv_model_variance_map, librecovar), Cint,
          (Ptr{Cvoid}, Csize_t, Ptr{Float32}, Csize_t), model, n_components, out, len)
rcv_model_n_zdims(model, out) =
    ccall((:rcv_model_n_zdims, librecovar), Cint, (Ptr{Cvoid}, Ref{Csize_t}), model, out)
rcv_model_zdims(model, out, len) =
    ccall((:rcv_model_zdims, librecovar), Cint, (Ptr{Cvoid}, Ptr{Csize_t}, Csize_t),
          model, out, len)
rcv_model_embedding(model, zdim, regularized, zs, zs_len, precisions, precisions_len,
                    contrasts, contrasts_len) =
    ccall((:rcv_model_embedding, librecovar), Cint,
          (Ptr{Cvoid}, Csize_t, Int32, Ptr{Float32}, Csize_t, Ptr{Float32}, Csize_t,
           Ptr{Float32}, Csize_t),
          model, zdim, regularized, zs, zs_len, precisions, precisions_len, contrasts,
          contrasts_len)
rcv_model_generate(model, zdim, regularized, point, point_len, options, progress, user_data,
                   out) =
    ccall((:rcv_model_generate, librecovar), Cint,
          (Ptr{Cvoid}, Csize_t, Int32, Ptr{Float32}, Csize_t, Ref{rcv_kernel_options},
           Ptr{Cvoid}, Ptr{Cvoid}, Ref{Ptr{Cvoid}}),
          model, zdim, regularized, point, point_len, options, progress, user_data, out)
rcv_generate_from_embedding(dataset, zs, zs_len, zdim, precisions, precisions_len, point,
                            point_len, options, progress, user_data, out) =
    ccall((:rcv_generate_from_embedding, librecovar), Cint,
          (Ptr{Cvoid}, Ptr{Float32}, Csize_t, Csize_t, Ptr{Float32}, Csize_t, Ptr{Float32},
           Csize_t, Ref{rcv_kernel_options}, Ptr{Cvoid}, Ptr{Cvoid}, Ref{Ptr{Cvoid}}),
          dataset, zs, zs_len, zdim, precisions, precisions_len, point, point_len, options,
          progress, user_data, out)
rcv_read_embedding(path, out, len, rows, zdim) =
    ccall((:rcv_read_embedding, librecovar), Cint,
          (Cstring, Ptr{Float32}, Csize_t, Ref{Csize_t}, Ref{Csize_t}),
          path, out, len, rows, zdim)

rcv_volume_free(volume) = ccall((:rcv_volume_free, librecovar), Cvoid, (Ptr{Cvoid},), volume)
rcv_volume_box_size(volume, out) =
    ccall((:rcv_volume_box_size, librecovar), Cint, (Ptr{Cvoid}, Ref{Csize_t}), volume, out)
rcv_volume_voxel_size(volume, out) =
    ccall((:rcv_volume_voxel_size, librecovar), Cint, (Ptr{Cvoid}, Ref{Cdouble}), volume, out)
rcv_volume_data(volume, kind, out, len) =
    ccall((:rcv_volume_data, librecovar), Cint, (Ptr{Cvoid}, Cint, Ptr{Float32}, Csize_t),
          volume, kind, out, len)
rcv_volume_write_mrc(volume, kind, path) =
    ccall((:rcv_volume_write_mrc, librecovar), Cint, (Ptr{Cvoid}, Cint, Cstring),
          volume, kind, path)
rcv_write_mrc(path, data, len, box_size, voxel_size) =
    ccall((:rcv_write_mrc, librecovar), Cint, (Cstring, Ptr{Float32}, Csize_t, Csize_t, Cdouble),
          path, data, len, box_size, voxel_size)

# ---------------------------------------------------------------------------------------
# Errors

"""
    RecovarError(status, message)

A failed library call: `status` is the `rcv_status` code (`RCV_ERR_IO`, ...), `message` the
library's explanation (it names the file, the field and the fix).
"""
struct RecovarError <: Exception
    status::Cint
    message::String
end

const _STATUS_NAMES = Dict(
    RCV_OK => "RCV_OK", RCV_ERR_INVALID_ARGUMENT => "RCV_ERR_INVALID_ARGUMENT",
    RCV_ERR_IO => "RCV_ERR_IO", RCV_ERR_FORMAT => "RCV_ERR_FORMAT",
    RCV_ERR_NOT_FOUND => "RCV_ERR_NOT_FOUND", RCV_ERR_INCONSISTENT => "RCV_ERR_INCONSISTENT",
    RCV_ERR_CANCELLED => "RCV_ERR_CANCELLED", RCV_ERR_INTERNAL => "RCV_ERR_INTERNAL",
    RCV_ERR_DEVICE => "RCV_ERR_DEVICE")

"""The name of an `rcv_status` code, e.g. `"RCV_ERR_IO"`."""
status_name(status::Integer) = get(_STATUS_NAMES, Cint(status), "RCV_ERR_UNKNOWN($status)")

Base.showerror(io::IO, e::RecovarError) =
    print(io, "RecovarError (", status_name(e.status), "): ", e.message)

# The message is thread-local in the library; no task switch happens between the failing
# call and this read.
function _check(status::Cint)
    status == RCV_OK && return nothing
    throw(RecovarError(status, unsafe_string(rcv_last_error_message())))
end

# ---------------------------------------------------------------------------------------
# Progress callbacks and long calls

mutable struct _ProgressContext
    f::Any
    error::Any   # nothing, or the exception the callback threw
end

# Called by the library, possibly from its worker threads (never concurrently). A callback
# returning `false` cancels; an exception cancels and is rethrown after the call returns.
function _progress_trampoline(user_data::Ptr{Cvoid}, stage::Ptr{UInt8}, done::UInt64,
                              total::UInt64)::Int32
    ctx = unsafe_pointer_to_objref(user_data)::_ProgressContext
    ctx.error === nothing || return Int32(1)
    try
        name = stage == C_NULL ? "" : unsafe_string(stage)
        return ctx.f(name, done, total) === false ? Int32(1) : Int32(0)
    catch e
        ctx.error = e
        return Int32(1)
    end
end

# Progress reports may come from the library's threads, which Julia adopts since 1.9.
const _CALLBACKS_OK = VERSION >= v"1.9"

function _progress_context(progress)
    progress === nothing && return nothing
    if !_CALLBACKS_OK
        @warn "Recovar: progress callbacks need Julia 1.9 or newer (they are called from the library's threads); ignored" maxlog = 1
        return nothing
    end
    return _ProgressContext(progress, nothing)
end

_callback_ptr(ctx) = ctx === nothing ? C_NULL :
    @cfunction(_progress_trampoline, Int32, (Ptr{Cvoid}, Ptr{UInt8}, UInt64, UInt64))
_user_ptr(ctx) = ctx === nothing ? C_NULL : pointer_from_objref(ctx)

# Long calls run in a GC-safe region (Julia 1.9+), so that a progress callback running on
# another thread, or another Julia thread, may collect garbage meanwhile. Every argument is
# a raw pointer or bits value by then: no Julia object is touched until the region ends.
@static if _CALLBACKS_OK
    @inline _gc_safe_enter() = ccall(:jl_gc_safe_enter, Int8, ())
    @inline _gc_safe_leave(state::Int8) = ccall(:jl_gc_safe_leave, Cvoid, (Int8,), state)
else
    @inline _gc_safe_enter() = Int8(0)
    @inline _gc_safe_leave(::Int8) = nothing
end

function _finish(status::Cint, ctx)
    if ctx !== nothing && ctx.error !== nothing
        throw(ctx.error)
    end
    _check(status)
end

# ---------------------------------------------------------------------------------------
# Handles

"""
    Dataset(particles; poses, ctf, datadir, ind, halfsets, n_images = 0, seed = 0,
            uninvert = :automatic, require_poses = false, require_ctf = false, preload = false)

Open particle images (.mrcs, .star, .cs or .txt) with their poses and CTF (cryoDRGN
`poses.pkl`/`ctf.pkl`, or taken from a .star/.cs), as the command line does. `uninvert` is
`:automatic`, `true` or `false`.

    Dataset(images, rotations, translations, ctf; seed = 0)

A dataset from Julia arrays (copied): `images` (D, D, n) with `images[x, y, i]`, `rotations`
(3, 3, n) with `rotations[:, :, i]` the rotation matrix of image i (cryoDRGN convention),
`translations` (2, n) in pixels, `ctf` (9, n) with the columns of a cryoDRGN ctf.pkl.

The handle is freed by the garbage collector, or at once by `close(dataset)`.
"""
mutable struct Dataset
    ptr::Ptr{Cvoid}
    function Dataset(ptr::Ptr{Cvoid})
        ptr == C_NULL && throw(ArgumentError("NULL dataset handle"))
        return finalizer(close, new(ptr))
    end
end

"""A generated volume: its halves, their average, the filtered map, the local resolution."""
mutable struct Volume
    ptr::Ptr{Cvoid}
    function Volume(ptr::Ptr{Cvoid})
        ptr == C_NULL && throw(ArgumentError("NULL volume handle"))
        return finalizer(close, new(ptr))
    end
end

"""
    Model(dataset; mask = :from_halfmaps, focus_mask = nothing, noise_model = :radial,
          zdims = nothing, correct_contrast = false, ignore_zero_frequency = false,
          memory = :normal, use_image_mask = true, memory_budget = 0, seed = 0,
          device = :auto)

The pipeline state of one dataset (the model keeps its own copy of it). `mask` is
`:from_halfmaps`, `:sphere`, `:none` or the path of an .mrc; `noise_model` `:radial` or
`:white`; `zdims` the latent dimensions (default [1, 2, 4, 10, 20]); `memory` `:normal`,
`:low` or `:very_low` (the CLI's --low-memory-option / --very-low-memory-option);
`memory_budget` bytes of working memory (0 = default; results never depend on it);
`device` where its stages and generation run: `:auto` (a CUDA GPU when a driver, NVRTC,
cuFFT and a device are present, else the CPU), `:cpu`, `:cuda` or `"cuda:N"` — chosen once,
here; an explicit GPU that cannot be used throws `RCV_ERR_DEVICE` ([`device_note`](@ref)
says which was chosen). Run it with [`run_stage!`](@ref); reopen a pipeline output folder with [`load_model`](@ref).
"""
mutable struct Model
    ptr::Ptr{Cvoid}
    function Model(ptr::Ptr{Cvoid})
        ptr == C_NULL && throw(ArgumentError("NULL model handle"))
        return finalizer(close, new(ptr))
    end
end

for (T, free) in ((:Dataset, :rcv_dataset_free), (:Model, :rcv_model_free),
                  (:Volume, :rcv_volume_free))
    @eval begin
        Base.unsafe_convert(::Type{Ptr{Cvoid}}, h::$T) = h.ptr
        function Base.close(h::$T)
            p = h.ptr
            h.ptr = C_NULL
            p == C_NULL || $free(p)
            return nothing
        end
        Base.isopen(h::$T) = h.ptr != C_NULL
    end
end

_cstr(::Nothing) = Ptr{UInt8}(C_NULL)
function _cstr(s::String)
    Base.containsnul(s) && throw(ArgumentError("path contains a NUL character: $(repr(s))"))
    return pointer(s)
end

function _getsize(f, h)
    out = Ref{Csize_t}(0)
    _check(f(h, out))
    return Int(out[])
end
function _getdouble(f, h)
    out = Ref{Cdouble}(0)
    _check(f(h, out))
    return out[]
end

const _UNINVERT = Dict{Any,Int32}(:automatic => RCV_UNINVERT_AUTOMATIC, true => RCV_UNINVERT_TRUE,
                                  false => RCV_UNINVERT_FALSE)

function Dataset(particles::AbstractString; poses = nothing, ctf = nothing, datadir = nothing,
                 ind = nothing, halfsets = nothing, n_images::Integer = 0, seed::Integer = 0,
                 uninvert = :automatic, require_poses::Bool = false, require_ctf::Bool = false,
                 preload::Bool = false)
    str(s) = s === nothing ? nothing : String(s)
    s1, s2, s3 = str(particles), str(poses), str(ctf)
    s4, s5, s6 = str(datadir), str(ind), str(halfsets)
    haskey(_UNINVERT, uninvert) ||
        throw(ArgumentError("uninvert must be :automatic, true or false, not $(repr(uninvert))"))
    opts = rcv_dataset_options()
    rcv_dataset_options_init(opts)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    GC.@preserve s1 s2 s3 s4 s5 s6 begin
        opts.particles = _cstr(s1)
        opts.poses = _cstr(s2)
        opts.ctf = _cstr(s3)
        opts.datadir = _cstr(s4)
        opts.ind = _cstr(s5)
        opts.halfsets = _cstr(s6)
        opts.n_images = n_images
        opts.seed = seed
        opts.uninvert = _UNINVERT[uninvert]
        opts.flags = (require_poses ? RCV_DATASET_REQUIRE_POSES : UInt32(0)) |
                     (require_ctf ? RCV_DATASET_REQUIRE_CTF : UInt32(0)) |
                     (preload ? RCV_DATASET_PRELOAD : UInt32(0))
        _check(rcv_dataset_open(opts, out))
    end
    return Dataset(out[])
end

function Dataset(images::AbstractArray{<:Real,3}, rotations::AbstractArray{<:Real,3},
                 translations::AbstractMatrix{<:Real}, ctf::AbstractMatrix{<:Real};
                 seed::Integer = 0)
    d1, d2, n = size(images)
    d1 == d2 || throw(DimensionMismatch("images must be (D, D, n), got $(size(images))"))
    size(rotations) == (3, 3, n) ||
        throw(DimensionMismatch("rotations must be (3, 3, $n), got $(size(rotations))"))
    size(translations) == (2, n) ||
        throw(DimensionMismatch("translations must be (2, $n), got $(size(translations))"))
    size(ctf) == (9, n) || throw(DimensionMismatch("ctf must be (9, $n), got $(size(ctf))"))
    imgs = convert(Array{Float32,3}, images)
    rots = convert(Array{Float32,3}, permutedims(rotations, (2, 1, 3)))  # row-major 3×3
    trans = convert(Matrix{Float32}, translations)
    ctfs = convert(Matrix{Cdouble}, ctf)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    _check(rcv_dataset_create(imgs, length(imgs), n, d1, rots, length(rots), trans,
                              length(trans), ctfs, length(ctfs), seed, out))
    return Dataset(out[])
end

"""Number of images of a dataset (after `ind`/`n_images`)."""
Base.length(d::Dataset) = _getsize(rcv_dataset_count, d)
"""Number of particles in the file before `ind`/`n_images`."""
total_in_file(d::Dataset) = _getsize(rcv_dataset_total_in_file, d)
"""Image or volume side in pixels."""
box_size(d::Dataset) = _getsize(rcv_dataset_box_size, d)
box_size(m::Model) = _getsize(rcv_model_box_size, m)
box_size(v::Volume) = _getsize(rcv_volume_box_size, v)
"""Pixel (voxel) size in Å."""
voxel_size(d::Dataset) = _getdouble(rcv_dataset_voxel_size, d)
voxel_size(m::Model) = _getdouble(rcv_model_voxel_size, m)
voxel_size(v::Volume) = _getdouble(rcv_volume_voxel_size, v)
"""Number of images of the model's dataset."""
n_images(m::Model) = _getsize(rcv_model_n_images, m)

Base.show(io::IO, d::Dataset) = isopen(d) ?
    print(io, "Recovar.Dataset(", length(d), " images of ", box_size(d), " px at ",
          round(voxel_size(d); digits = 3), " Å)") : print(io, "Recovar.Dataset(closed)")

const _MASKS = Dict(:from_halfmaps => RCV_MASK_FROM_HALFMAPS, :sphere => RCV_MASK_SPHERE,
                    :none => RCV_MASK_NONE)
const _NOISE = Dict(:radial => RCV_NOISE_RADIAL, :white => RCV_NOISE_WHITE)
const _MEMORY = Dict(:normal => RCV_MEMORY_NORMAL, :low => RCV_MEMORY_LOW,
                     :very_low => RCV_MEMORY_VERY_LOW)
const _STAGES = Dict(:mean => RCV_STAGE_MEAN, :noise => RCV_STAGE_NOISE,
                     :covariance => RCV_STAGE_COVARIANCE, :embedding => RCV_STAGE_EMBEDDING,
                     :all => RCV_STAGE_ALL)
const _KINDS = Dict(:filtered => RCV_VOLUME_FILTERED, :unfiltered => RCV_VOLUME_UNFILTERED,
                    :half1 => RCV_VOLUME_HALF1, :half2 => RCV_VOLUME_HALF2,
                    :filtered_no_bfactor => RCV_VOLUME_FILTERED_NO_BFACTOR,
                    :local_resolution => RCV_VOLUME_LOCAL_RESOLUTION)

# A device as the command line spells it (:auto, :cpu, :cuda, "cuda:N") -> (kind, index).
function _device(d)
    s = lowercase(strip(string(d)))
    s == "auto" && return (RCV_DEVICE_AUTO, Int32(0))
    s == "cpu" && return (RCV_DEVICE_CPU, Int32(0))
    s == "cuda" && return (RCV_DEVICE_CUDA, Int32(0))
    if startswith(s, "cuda:")
        n = tryparse(Int32, s[6:end])
        n !== nothing && n >= 0 && return (RCV_DEVICE_CUDA, n)
    end
    throw(ArgumentError("device must be :auto, :cpu, :cuda or \"cuda:N\", not $(repr(d))"))
end

function _lookup(table, key, what)
    haskey(table, key) && return table[key]
    throw(ArgumentError("$what must be one of $(join(sort!(collect(keys(table))), ", ")), not $(repr(key))"))
end

function Model(dataset::Dataset; mask = :from_halfmaps, focus_mask = nothing,
               noise_model::Symbol = :radial, zdims = nothing, correct_contrast::Bool = false,
               ignore_zero_frequency::Bool = false, memory::Symbol = :normal,
               use_image_mask::Bool = true, memory_budget::Integer = 0, seed::Integer = 0,
               device = :auto)
    kind, index = _device(device)
    opts = rcv_model_options()
    rcv_model_options_init(opts)
    mask_path = mask isa AbstractString ? String(mask) : nothing
    focus = focus_mask === nothing ? nothing : String(focus_mask)
    z = zdims === nothing ? nothing : Csize_t[zdims...]
    out = Ref{Ptr{Cvoid}}(C_NULL)
    GC.@preserve mask_path focus z begin
        opts.mask_kind = mask_path === nothing ? _lookup(_MASKS, mask, "mask") : RCV_MASK_FILE
        opts.mask_path = _cstr(mask_path)
        opts.focus_mask = _cstr(focus)
        opts.noise_model = _lookup(_NOISE, noise_model, "noise_model")
        if z !== nothing
            opts.zdims = isempty(z) ? C_NULL : pointer(z)
            opts.n_zdims = length(z)
        end
        opts.correct_contrast = correct_contrast
        opts.ignore_zero_frequency = ignore_zero_frequency
        opts.memory_option = _lookup(_MEMORY, memory, "memory")
        opts.use_image_mask = use_image_mask
        opts.memory_budget = memory_budget
        opts.seed = seed
        opts.device = kind
        opts.device_index = index
        _check(rcv_model_create(dataset, opts, out))
    end
    return Model(out[])
end

"""
    load_model(pipeline_dir) -> Model

Reopen the output folder of `recovar pipeline` (or of [`save`](@ref)). Its device is
`:auto`; `generate(...; device)` chooses another per call.
"""
function load_model(dir::AbstractString)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    _check(rcv_model_load(String(dir), out))
    return Model(out[])
end

"""
    device_note(model) -> String

The model's device as a line for a log, e.g. `"device: cpu (8 threads)"` or
`"device: cuda:0 (NVIDIA H100 ..., compute 9.0, 79.1 GiB)"`; for `:auto` without a GPU it
also says why none was used.
"""
function device_note(m::Model)
    out = Ref{Ptr{UInt8}}(C_NULL)
    _check(rcv_model_device(m, out))
    return out[] == C_NULL ? "" : unsafe_string(out[])
end

"""
    run_stage!(model, stage = :all; progress = nothing)

Run a stage (`:mean`, `:noise`, `:covariance`, `:embedding`, or `:all` for every stage not
yet run); missing earlier stages run first. `progress(stage::String, done, total)` is called
as work proceeds, from the library's threads (Julia 1.9+; ignored with a warning before);
returning `false` cancels (a `RecovarError` with `RCV_ERR_CANCELLED`), and an exception
thrown in it cancels and is rethrown here.
"""
function run_stage!(m::Model, stage::Symbol = :all; progress = nothing)
    st = _lookup(_STAGES, stage, "stage")
    ctx = _progress_context(progress)
    status = GC.@preserve m ctx begin
        pm = m.ptr
        cb = _callback_ptr(ctx)
        ud = _user_ptr(ctx)
        gc = _gc_safe_enter()
        s = rcv_model_run_stage(pm, st, cb, ud)
        _gc_safe_leave(gc)
        s
    end
    _finish(status, ctx)
    return m
end

"""Whether a stage (`:mean`, `:noise`, `:covariance`, `:embedding`) has run."""
function stage_done(m::Model, stage::Symbol)
    out = Ref{Int32}(0)
    _check(rcv_model_stage_done(m, _lookup(_STAGES, stage, "stage"), out))
    return out[] != 0
end

"""Write the pipeline's output layout into `dir`."""
save(m::Model, dir::AbstractString) = (_check(rcv_model_save(m, String(dir))); nothing)

_cube(n) = Array{Float32,3}(undef, n, n, n)

"""The mean volume, (N, N, N) indexed `[x, y, z]`."""
function mean_volume(m::Model)
    v = _cube(box_size(m))
    _check(rcv_model_mean(m, v, length(v)))
    return v
end

"""The radial noise profile (N/2 - 1 values, one per frequency shell)."""
function noise_profile(m::Model)
    v = Vector{Cdouble}(undef, box_size(m) ÷ 2 - 1)
    _check(rcv_model_noise(m, v, length(v)))
    return v
end

"""Number of principal components."""
n_eigen(m::Model) = _getsize(rcv_model_n_eigen, m)

"""Eigenvalues of the covariance, largest first."""
function eigenvalues(m::Model)
    v = Vector{Cdouble}(undef, n_eigen(m))
    isempty(v) || _check(rcv_model_eigenvalues(m, v, length(v)))
    return v
end

"""Eigenvolume `k` (1-based, as Julia counts) in real space, (N, N, N) indexed `[x, y, z]`."""
function eigenvolume(m::Model, k::Integer)
    k >= 1 || throw(ArgumentError("eigenvolumes are numbered from 1, got $k"))
    v = _cube(box_size(m))
    _check(rcv_model_eigenvolume(m, k - 1, v, length(v)))
    return v
end

"""Σ_{k ≤ n} λ_k u_k², the variance explained by the first `n` components, (N, N, N)."""
function variance_map(m::Model, n_components::Integer)
    v = _cube(box_size(m))
    _check(rcv_model_variance_map(m, n_components, v, length(v)))
    return v
end

"""The latent dimensions with an embedding, ascending (empty before the embedding stage)."""
function zdims(m::Model)
    v = Vector{Csize_t}(undef, _getsize(rcv_model_n_zdims, m))
    isempty(v) || _check(rcv_model_zdims(m, v, length(v)))
    return Int.(v)
end

"""
    embedding(model, zdim; regularized = true, precisions = false, contrasts = false)

The embedding of every image at `zdim`, in dataset order: a named tuple with `zs`
(zdim, n) (`zs[:, i]` is image i), `precisions` (zdim, zdim, n) or `nothing`, `contrasts`
(n) or `nothing`.
"""
function embedding(m::Model, zdim::Integer; regularized::Bool = true, precisions::Bool = false,
                   contrasts::Bool = false)
    n = n_images(m)
    zs = Matrix{Float32}(undef, zdim, n)
    ps = precisions ? Array{Float32,3}(undef, zdim, zdim, n) : nothing
    cs = contrasts ? Vector{Float32}(undef, n) : nothing
    _check(rcv_model_embedding(m, zdim, regularized, zs, length(zs),
                               ps === nothing ? C_NULL : ps, ps === nothing ? 0 : length(ps),
                               cs === nothing ? C_NULL : cs, cs === nothing ? 0 : length(cs)))
    return (zs = zs, precisions = ps, contrasts = cs)
end

function _kernel_options(; n_bins = nothing, maskrad_fraction = nothing, n_min_images = nothing,
                         bfactor = nothing, batch_size = nothing, device = nothing)
    o = rcv_kernel_options()
    rcv_kernel_options_init(o)
    device === nothing || ((o.device, o.device_index) = _device(device))
    n_bins === nothing || (o.n_bins = n_bins)
    maskrad_fraction === nothing || (o.maskrad_fraction = maskrad_fraction)
    n_min_images === nothing || (o.n_min_images = n_min_images)
    bfactor === nothing || (o.bfactor = bfactor)
    batch_size === nothing || (o.batch_size = batch_size)
    return o
end

"""
    generate(model, zdim, point; regularized = true, n_bins, maskrad_fraction, n_min_images,
             bfactor, batch_size, device, progress = nothing) -> Volume

Kernel-regression volume at `point` (a vector of `zdim` coordinates) of the model's
embedding. Keyword options left out take the library's defaults (50 bins, mask radius
fraction 20, at least 100 images, B-factor 0, automatic batches, the model's device;
`device = :cpu`, `:cuda`, `"cuda:N"` or `:auto` chooses one for this call); `progress` as
in [`run_stage!`](@ref).
"""
function generate(m::Model, zdim::Integer, point::AbstractVector{<:Real};
                  regularized::Bool = true, progress = nothing, kernel...)
    pt = convert(Vector{Float32}, point)
    opts = _kernel_options(; kernel...)
    ctx = _progress_context(progress)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    status = GC.@preserve m pt opts ctx out begin
        pm = m.ptr
        ppt = pointer(pt)
        popts = Ptr{rcv_kernel_options}(pointer_from_objref(opts))
        pout = Base.unsafe_convert(Ptr{Ptr{Cvoid}}, out)
        cb = _callback_ptr(ctx)
        ud = _user_ptr(ctx)
        gc = _gc_safe_enter()
        s = rcv_model_generate(pm, Csize_t(zdim), Int32(regularized), ppt, Csize_t(length(pt)),
                               popts, cb, ud, pout)
        _gc_safe_leave(gc)
        s
    end
    _finish(status, ctx)
    return Volume(out[])
end

"""
    generate_from_embedding(dataset, zs, point; precisions = nothing, kernel options...,
                            progress = nothing) -> Volume

Kernel-regression volume at `point` from an external embedding `zs` (zdim, rows) of the
dataset's images — rows = `length(dataset)` or `total_in_file(dataset)`, e.g. cryoDRGN's
z.pkl read by [`read_embedding`](@ref). `precisions` (zdim, zdim, rows) per-image precision
matrices, or `nothing` for the identity. Options as in [`generate`](@ref); `device`
(default `:auto`) is chosen for each call.
"""
function generate_from_embedding(d::Dataset, zs::AbstractMatrix{<:Real},
                                 point::AbstractVector{<:Real}; precisions = nothing,
                                 progress = nothing, kernel...)
    z = convert(Matrix{Float32}, zs)
    zdim = size(z, 1)
    p = precisions === nothing ? nothing : convert(Array{Float32,3}, precisions)
    pt = convert(Vector{Float32}, point)
    opts = _kernel_options(; kernel...)
    ctx = _progress_context(progress)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    status = GC.@preserve d z p pt opts ctx out begin
        pd = d.ptr
        pz = pointer(z)
        pp = p === nothing ? Ptr{Float32}(C_NULL) : pointer(p)
        np = p === nothing ? 0 : length(p)
        ppt = pointer(pt)
        popts = Ptr{rcv_kernel_options}(pointer_from_objref(opts))
        pout = Base.unsafe_convert(Ptr{Ptr{Cvoid}}, out)
        cb = _callback_ptr(ctx)
        ud = _user_ptr(ctx)
        gc = _gc_safe_enter()
        s = rcv_generate_from_embedding(pd, pz, Csize_t(length(z)), Csize_t(zdim), pp,
                                        Csize_t(np), ppt, Csize_t(length(pt)), popts, cb, ud,
                                        pout)
        _gc_safe_leave(gc)
        s
    end
    _finish(status, ctx)
    return Volume(out[])
end

"""
    read_embedding(path) -> Matrix{Float32}

An embedding file (cryoDRGN z.pkl, .npy or .txt) as a (zdim, rows) matrix: `zs[:, i]` is
the latent point of image i.
"""
function read_embedding(path::AbstractString)
    p = String(path)
    rows = Ref{Csize_t}(0)
    zdim = Ref{Csize_t}(0)
    _check(rcv_read_embedding(p, C_NULL, 0, rows, zdim))
    z = Matrix{Float32}(undef, zdim[], rows[])
    _check(rcv_read_embedding(p, z, length(z), rows, zdim))
    return z
end

"""
    volume_data(volume, kind = :filtered) -> Array{Float32,3}

One of the volumes of a generated state, (N, N, N) indexed `[x, y, z]`: `:filtered`,
`:unfiltered`, `:half1`, `:half2`, `:filtered_no_bfactor` or `:local_resolution` (Å).
"""
function volume_data(v::Volume, kind::Symbol = :filtered)
    a = _cube(box_size(v))
    _check(rcv_volume_data(v, _lookup(_KINDS, kind, "kind"), a, length(a)))
    return a
end
Base.Array(v::Volume) = volume_data(v)

"""
    write_mrc(volume::Volume, path; kind = :filtered)
    write_mrc(path, data::AbstractArray{<:Real,3}; voxel_size = 1.0)

Write a generated volume, or a Julia (N, N, N) array indexed `[x, y, z]`, as an .mrc file.
"""
function write_mrc(v::Volume, path::AbstractString; kind::Symbol = :filtered)
    _check(rcv_volume_write_mrc(v, _lookup(_KINDS, kind, "kind"), String(path)))
    return nothing
end
function write_mrc(path::AbstractString, data::AbstractArray{<:Real,3}; voxel_size::Real = 1.0)
    n = size(data, 1)
    size(data) == (n, n, n) || throw(DimensionMismatch("a cubic volume is needed, got $(size(data))"))
    a = convert(Array{Float32,3}, data)
    _check(rcv_write_mrc(String(path), a, length(a), n, voxel_size))
    return nothing
end

"""The library version at run time, e.g. v"0.1.0"."""
version() = VersionNumber(unsafe_string(rcv_version()))
"""The ABI number of the loaded library (`RCV_ABI_VERSION` when binding and library match)."""
abi_version() = Int(rcv_abi_version())

end # module
