//! Any byte string given to the offline file decoder either decodes or is
//! refused with an error; it never panics or allocates without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_psi::files::PsiFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = PsiFile::decode(data, 1 << 12) {
        let again = PsiFile::decode(&file.encode(), 1 << 12);
        assert_eq!(again.ok(), Some(file));
    }
});
