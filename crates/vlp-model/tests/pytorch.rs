//! vlp's `torch.save` reader against PyTorch's own writer: the fixture
//! (`benches/openclip/torch_fixture.py`, torch 2.5) holds f32, f16, bf16, f64 and int64 tensors,
//! a transposed view, a slice at a storage offset, a 0-d scalar, keys sharing a storage, and a
//! Chinese-CLIP-style training checkpoint (`state_dict` with `module.` keys beside the optimizer).

use serde_json::Value;
use std::path::{Path, PathBuf};
use vlp_model::openclip::StateDict;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch").join(name)
}

fn check(file: &str, section: &str) {
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    let want = expected[section].as_object().unwrap();
    let got = StateDict::read(&fixture(file)).unwrap();
    let mut keys: Vec<&str> = want.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(got.keys().collect::<Vec<_>>(), keys, "{file}: keys");
    for (key, t) in want {
        let (shape, values) = got.get(key).unwrap();
        let want_shape: Vec<usize> = t["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        let want_values: Vec<f32> = t["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(shape, want_shape.as_slice(), "{file}: {key} shape");
        assert_eq!(values, want_values.as_slice(), "{file}: {key} values");
    }
}

#[test]
fn a_state_dict_reads_as_pytorch_wrote_it() {
    check("flat.bin", "flat");
}

#[test]
fn a_training_checkpoint_gives_its_state_dict_without_the_module_prefix() {
    check("checkpoint.pt", "checkpoint");
}

#[test]
fn code_in_a_pickle_is_refused_by_name_and_never_run() {
    let err = StateDict::read(&fixture("evil.pt")).unwrap_err().to_string();
    assert!(err.contains("evil.pt") && err.contains("system") && err.contains("runs nothing else"), "{err}");
}

#[test]
fn a_cut_file_is_an_error_naming_it() {
    let bytes = std::fs::read(fixture("flat.bin")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for keep in [bytes.len() / 2, bytes.len() - 30, 100] {
        let p = tmp.path().join(format!("cut-{keep}.bin"));
        std::fs::write(&p, &bytes[..keep]).unwrap();
        let err = StateDict::read(&p).unwrap_err().to_string();
        assert!(err.contains(&format!("cut-{keep}.bin")), "{err}");
    }
}
