//! Every parameter of every tower, drawn at a width large enough to measure, against the
//! distribution its reference implementation draws it from (`vlp_model::init`'s table): the mean,
//! the standard deviation (within five standard errors of the sampling spread) and, for uniform
//! draws, the range.

use burn::backend::Flex;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use std::collections::BTreeMap;
use vlp_model::config::{ImageTowerConfig, ResnetConfig, ResnetPool, TextPool, TextTowerConfig, VitConfig};
use vlp_model::ModelConfig;

/// Each parameter's values by its path (`text.transformer.blocks.0.attn.qkv.weight`).
struct Collect(Vec<String>, BTreeMap<String, Vec<f64>>);

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.0.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.0.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let v = param.val().into_data().convert::<f32>().to_vec::<f32>().unwrap();
        self.1.insert(self.0.join("."), v.into_iter().map(f64::from).collect());
    }
}

fn params(cfg: &ModelConfig) -> BTreeMap<String, Vec<f64>> {
    let device = Default::default();
    let _guard = vlp_model::init::rng_guard(); // the tests here draw side by side
    Flex::seed(&device, 7);
    let model = cfg.init::<Flex>(&device);
    let mut c = Collect(Vec::new(), BTreeMap::new());
    model.visit(&mut c);
    c.1
}

#[derive(Debug, Clone, Copy)]
enum Want {
    Normal(f64),
    Uniform(f64),
    Constant(f64),
}

fn check(name: &str, v: &[f64], want: Want) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    match want {
        Want::Constant(c) => assert!(v.iter().all(|&x| x == c), "{name}: want every value {c}, got mean {mean} std {std}"),
        Want::Normal(s) => {
            assert!(mean.abs() < 5.0 * s / n.sqrt(), "{name}: mean {mean}, want 0 (N(0, {s}²), {n} values)");
            assert!((std / s - 1.0).abs() < 5.0 / (2.0 * n).sqrt(), "{name}: std {std}, want {s} ({n} values)");
            // A normal draw reaches past 2σ somewhere; a uniform one of the same std never does.
            assert!(max > 2.2 * s, "{name}: |x| ≤ {max}: not a normal of std {s}");
        }
        Want::Uniform(bound) => {
            let s = bound / 3f64.sqrt();
            assert!(mean.abs() < 5.0 * s / n.sqrt(), "{name}: mean {mean}, want 0 (U(±{bound}), {n} values)");
            assert!((std / s - 1.0).abs() < 5.0 * (0.2 / n).sqrt(), "{name}: std {std}, want {s} (U(±{bound}))");
            assert!(max <= bound * (1.0 + 1e-6) && max > 0.9 * bound, "{name}: |x| reaches {max}, want up to {bound}");
        }
    }
}

/// Checks every parameter against `rule(path)`; every parameter must have a rule.
fn check_all(cfg: &ModelConfig, rule: impl Fn(&str, &[usize]) -> Option<Want>, shapes: impl Fn(&str) -> Vec<usize>) {
    let all = params(cfg);
    for (name, v) in &all {
        let want = rule(name, &shapes(name)).unwrap_or_else(|| panic!("{name}: no expected distribution written down"));
        check(name, v, want);
    }
}

fn text(causal: bool, width: usize, layers: usize) -> TextTowerConfig {
    TextTowerConfig {
        context_length: 64,
        vocab_size: 512,
        width,
        layers,
        heads: 4,
        mlp_ratio: 4.0,
        causal,
        pool: if causal { TextPool::Eos } else { TextPool::Cls },
        activation: Default::default(),
        norm: Default::default(),
        layer_norm_eps: 1e-5,
    }
}

fn vit(width: usize) -> ImageTowerConfig {
    ImageTowerConfig::Vit(VitConfig {
        image_size: 64,
        patch_size: 8,
        width,
        layers: 2,
        heads: 4,
        mlp_ratio: 4.0,
        token_reduction: None,
        activation: Default::default(),
    })
}

/// The rules shared by the text towers' blocks, by the layer's last two path segments.
fn block(name: &str, w: f64, layers: f64, bert: bool) -> Option<Want> {
    let tail: Vec<&str> = name.rsplitn(3, '.').collect();
    let (layer, what) = (tail.get(1).copied()?, tail.first().copied()?);
    if bert {
        return Some(match (layer, what) {
            ("qkv" | "out" | "mlp_fc" | "mlp_proj", "weight") => Want::Normal(0.02),
            (_, "bias") | (_, "beta") => Want::Constant(0.0),
            (_, "gamma") => Want::Constant(1.0),
            _ => return None,
        });
    }
    let proj_std = w.powf(-0.5) * (2.0 * layers).powf(-0.5);
    Some(match (layer, what) {
        ("qkv", "weight") => Want::Normal(w.powf(-0.5)),
        ("out" | "mlp_proj", "weight") => Want::Normal(proj_std),
        ("mlp_fc", "weight") => Want::Normal((2.0 * w).powf(-0.5)),
        ("qkv" | "out", "bias") => Want::Constant(0.0),
        ("mlp_fc", "bias") => Want::Uniform(w.powf(-0.5)),
        ("mlp_proj", "bias") => Want::Uniform((4.0 * w).powf(-0.5)),
        (_, "gamma") => Want::Constant(1.0),
        (_, "beta") => Want::Constant(0.0),
        _ => return None,
    })
}

#[test]
fn vit_and_causal_text_start_as_openclip() {
    let (w, tw, layers) = (256usize, 192usize, 3usize);
    let cfg = ModelConfig { embed_dim: 128, token_dim: Some(96), image: vit(w), text: text(true, tw, layers) };
    let (wf, twf) = (w as f64, tw as f64);
    check_all(
        &cfg,
        |name, _| {
            if let Some(rest) = name.strip_prefix("image.Vit.") {
                return Some(match rest {
                    "patch_embed.weight" => Want::Uniform((3.0 * 64.0f64).powf(-0.5)),
                    "class_token" | "positional_embedding" | "proj.weight" | "token_proj.weight" => Want::Normal(wf.powf(-0.5)),
                    r if r.ends_with("gamma") => Want::Constant(1.0),
                    r if r.ends_with("beta") => Want::Constant(0.0),
                    r if r.ends_with("attn.qkv.weight") => Want::Uniform((6.0 / (4.0 * wf)).sqrt()),
                    r if r.ends_with("attn.qkv.bias") || r.ends_with("attn.out.bias") => Want::Constant(0.0),
                    r if r.ends_with("attn.out.weight") || r.ends_with("mlp_fc.weight") || r.ends_with("mlp_fc.bias") => {
                        Want::Uniform(wf.powf(-0.5))
                    }
                    r if r.ends_with("mlp_proj.weight") || r.ends_with("mlp_proj.bias") => Want::Uniform((4.0 * wf).powf(-0.5)),
                    _ => return None,
                });
            }
            if let Some(rest) = name.strip_prefix("text.") {
                return match rest {
                    "token_embedding.weight" => Some(Want::Normal(0.02)),
                    "positional_embedding" => Some(Want::Normal(0.01)),
                    "proj.weight" | "token_proj.weight" => Some(Want::Normal(twf.powf(-0.5))),
                    "ln_final.gamma" => Some(Want::Constant(1.0)),
                    "ln_final.beta" => Some(Want::Constant(0.0)),
                    _ => block(rest, twf, layers as f64, false),
                };
            }
            match name {
                "logit_scale" | "token_logit_scale" => Some(Want::Constant(f64::from(vlp_model::INIT_LOGIT_SCALE))),
                _ => None,
            }
        },
        |_| vec![],
    );
}

#[test]
fn bidirectional_text_starts_as_bert() {
    let tw = 192usize;
    let cfg = ModelConfig { embed_dim: 128, token_dim: None, image: vit(64), text: text(false, tw, 2) };
    let all = params(&cfg);
    let mut seen = 0;
    for (name, v) in all.iter().filter(|(k, _)| k.starts_with("text.")) {
        let rest = &name["text.".len()..];
        let want = match rest {
            "token_embedding.weight" | "positional_embedding" => Want::Normal(0.02),
            "proj.weight" | "token_proj.weight" => Want::Normal((tw as f64).powf(-0.5)),
            "ln_final.gamma" => Want::Constant(1.0),
            "ln_final.beta" => Want::Constant(0.0),
            _ => block(rest, tw as f64, 2.0, true).unwrap_or_else(|| panic!("{name}: no rule")),
        };
        check(name, v, want);
        seen += 1;
    }
    assert!(seen > 20, "only {seen} text parameters checked");
}

#[test]
fn resnet_starts_as_openclip_modified_resnet() {
    let r = ResnetConfig { image_size: 64, layers: vec![1, 1], width: 64, pool: ResnetPool::Attention, heads: 4 };
    let c = r.out_channels() as f64; // 512
    let cfg = ModelConfig { embed_dim: 128, token_dim: None, image: ImageTowerConfig::Resnet(r), text: text(true, 64, 1) };
    let all = params(&cfg);
    let mut seen = 0;
    for (name, v) in all.iter().filter(|(k, _)| k.starts_with("image.")) {
        let rest = name.strip_prefix("image.Resnet.").expect("a ResNet tower");
        let want = if rest.ends_with("conv.weight") || rest == "stem_stride.weight" {
            // [cout, cin, k, k]: U(±1/√(cin·k²)), fan-in read from the count of values per output
            let cout = if rest == "stem_stride.weight" { 32 } else { conv_out(rest) };
            Want::Uniform((v.len() as f64 / cout as f64).powf(-0.5))
        } else if rest.ends_with("expand.bn.gamma") {
            Want::Constant(0.0)
        } else if rest.ends_with("bn.gamma") {
            Want::Constant(1.0)
        } else if rest.ends_with("bn.beta") || rest.ends_with("bn.running_mean") {
            Want::Constant(0.0)
        } else if rest.ends_with("bn.running_var") {
            Want::Constant(1.0)
        } else if rest.starts_with("pool_attention.") && rest.ends_with("weight") || rest == "pool_positions" {
            Want::Normal(c.powf(-0.5))
        } else if rest.starts_with("pool_attention.") && rest.ends_with("bias") {
            Want::Uniform(c.powf(-0.5))
        } else if rest == "proj.weight" || rest == "token_proj.weight" {
            Want::Normal(c.powf(-0.5))
        } else {
            panic!("{name}: no rule");
        };
        check(name, v, want);
        seen += 1;
    }
    assert!(seen > 15, "only {seen} image parameters checked");
}

/// Output channels of a ResNet convolution, from its place in the `[1, 1]`, width-64 tower.
fn conv_out(path: &str) -> usize {
    if path.starts_with("stem.0") {
        return 32;
    }
    if path.starts_with("stem.1") {
        return 64;
    }
    let block: usize = path.strip_prefix("blocks.").and_then(|r| r.split('.').next()).and_then(|b| b.parse().ok()).expect("a block");
    let planes = 64 << block;
    if path.contains("expand") || path.contains("downsample") {
        planes * 4
    } else {
        planes
    }
}

/// A model built inside `for_loading` draws nothing: the seeded stream after it is the one a
/// fresh seed gives, records loaded into it are the saved values, and a parameter no record
/// replaces is still drawn from its distribution when first read.
#[test]
fn a_model_built_for_loading_draws_nothing_until_read() {
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    let cfg = ModelConfig { embed_dim: 32, token_dim: None, image: vit(32), text: text(true, 32, 1) };
    let device = Default::default();
    let want = params(&cfg);

    let guard = vlp_model::init::rng_guard();
    Flex::seed(&device, 7);
    let skeleton = vlp_model::init::for_loading(|| cfg.init::<Flex>(&device));
    let drawn_after = cfg.init::<Flex>(&device);
    let mut c = Collect(Vec::new(), BTreeMap::new());
    drawn_after.visit(&mut c);
    assert_eq!(c.1, want, "building for loading moved the seeded stream");
    drop(guard);

    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = recorder.record(drawn_after.into_record(), ()).unwrap();
    let loaded = skeleton.load_record(recorder.load(bytes, &device).unwrap());
    let mut c = Collect(Vec::new(), BTreeMap::new());
    loaded.visit(&mut c);
    assert_eq!(c.1, want);

    // outside for_loading, parameters are drawn when built; inside, on first read
    let unread = vlp_model::init::for_loading(|| cfg.init::<Flex>(&device));
    let mut c = Collect(Vec::new(), BTreeMap::new());
    unread.visit(&mut c);
    let projection = &c.1["image.Vit.proj.weight"];
    assert_ne!(projection, &want["image.Vit.proj.weight"], "an unread parameter was drawn at build");
    check("image.Vit.proj.weight", projection, Want::Normal(32f64.powf(-0.5)));
}
