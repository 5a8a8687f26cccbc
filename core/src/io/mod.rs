//! File formats, and nothing else: this room knows bytes and layouts, not science.
//!
//! - [`mrc`]: MRC/MRCS volumes and particle stacks (lazy stack reader, atomic writers).
//! - [`pickle`]: Python pickles as numpy writes them (poses, CTF, indices, z.pkl), and a writer
//!   whose output `pickle.load` + numpy read back.
//! - [`star`]: RELION .star files (3.0, 3.1 with optics, 5).
//! - [`npy`] and [`cs`]: numpy .npy files including structured arrays, and cryoSPARC .cs files
//!   built on them.
//! - [`txt`]: .txt lists of particle stacks.
//! - [`atomic`]: temp-file-and-rename output.

pub mod atomic;
pub mod cs;
pub mod mrc;
pub mod npy;
pub mod pickle;
pub mod star;
pub mod txt;
