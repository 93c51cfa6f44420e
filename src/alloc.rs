//! The process allocator: mimalloc, called the way its fast paths expect.
//!
//! The data path allocates per connection (a task, I/O registrations,
//! buffers) in sizes glibc serves from its slow path; mimalloc's are cheaper
//! (BENCHMARKS.md §7). The `mimalloc` crate's allocator passes every Rust
//! allocation to `mi_malloc_aligned`, whose fast path only covers blocks up
//! to 1 KiB that happen to be aligned; everything else (a connection's boxed
//! state, its buffers) took the generic aligned path, ~100 instructions a
//! call, 7 calls per `Connection: close` request. mimalloc's blocks are
//! always at least pointer-aligned, so layouts that ask for no more than
//! that go to plain `mi_malloc`; larger alignments (tokio's 128-byte
//! cache-line-padded structures) keep the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Alignment every mimalloc block has (its size classes are multiples of
/// the word size).
const WORD: usize = std::mem::size_of::<usize>();

pub struct MiMalloc;

type Plain = unsafe extern "C" fn(usize) -> *mut c_void;
type Aligned = unsafe extern "C" fn(usize, usize) -> *mut c_void;

/// A block for `layout` from `plain` when mimalloc's own alignment covers
/// it, else from `aligned`.
///
/// # Safety
/// As for [`GlobalAlloc::alloc`].
#[inline(always)]
unsafe fn block(layout: Layout, plain: Plain, aligned: Aligned) -> *mut u8 {
    let p = if layout.align() <= WORD {
        plain(layout.size())
    } else {
        aligned(layout.size(), layout.align())
    };
    p as *mut u8
}

// SAFETY: every method forwards to mimalloc with a size and an alignment
// that satisfy the layout; blocks from either family are freed by `mi_free`
// and resized by the realloc of the same family.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        block(layout, mi::mi_malloc, mi::mi_malloc_aligned)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        block(layout, mi::mi_zalloc, mi::mi_zalloc_aligned)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_gets_its_alignment_and_keeps_its_bytes() {
        let a = MiMalloc;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [
                1usize,
                7,
                8,
                15,
                16,
                24,
                100,
                1000,
                1025,
                2776,
                16384,
                1 << 20,
            ] {
                let l = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size; the block is used within its layout
                // and freed once.
                unsafe {
                    let p = a.alloc(l);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xa5, size);
                    let q = a.realloc(p, l, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    assert!(std::slice::from_raw_parts(q, size)
                        .iter()
                        .all(|&b| b == 0xa5));
                    a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(l);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, l);
                }
            }
        }
    }
}
