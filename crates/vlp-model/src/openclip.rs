//! OpenCLIP's state-dict names for vlp's parameters, the loader that fills a vlp model from an
//! OpenCLIP checkpoint of the same architecture (OpenCLIP's own ViT image tower and causal text
//! tower: `visual.*`, `transformer.*`, `token_embedding`, `text_projection`, `logit_scale`), and
//! its inverse, which writes a vlp model in OpenCLIP's names and layout ([`to_state_dict`],
//! [`openclip_config`]).
//!
//! PyTorch's `nn.Linear` and `nn.MultiheadAttention` store weights `[out, in]`; burn's `Linear`
//! stores `[in, out]`, so those are transposed. OpenCLIP's `visual.proj` and `text_projection`
//! are plain matrices applied as `x @ proj`, `[in, out]` already, and are not.
//!
//! Loading is all or nothing: a key that is missing, a shape that differs, or a key left over
//! (another architecture) is an error naming the key, and no model is returned. The parameters
//! OpenCLIP has no counterpart for (vlp's per-token projections and the token-level temperature,
//! used only by the FILIP loss) keep their initial values.

use crate::config::{Activation, BlockNorm, ImageTowerConfig, ModelConfig, ModifiedResnetConfig, TextPool, TextTowerConfig, VitConfig};
use crate::dual::{DualEncoder, ImageTower};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{key}: the checkpoint has no such tensor (vlp's {param} needs it)")]
    Missing { key: String, param: String },
    #[error("{key}: expected shape {expected:?} for vlp's {param}, found {found:?}")]
    Shape { key: String, param: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("the checkpoint holds tensors this architecture has no place for (another architecture?): {}", keys.join(", "))]
    Unused { keys: Vec<String> },
    #[error("{0}")]
    Unsupported(String),
}

/// A checkpoint's tensors by name, widened to f32, row-major.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl StateDict {
    /// Reads a state dict in either format: a `torch.save` ZIP archive (`.bin`, `.pt`, `.pth`;
    /// [`crate::pytorch`]) or `.safetensors`, told apart by their first bytes.
    pub fn read(path: &Path) -> Result<Self, ImportError> {
        let mut head = [0u8; 4];
        let n = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .map_err(|e| ImportError::Read { path: path.display().to_string(), message: e.to_string() })?;
        if n == 4 && head == [0x50, 0x4b, 0x03, 0x04] {
            crate::pytorch::read_pytorch(path)
        } else {
            Self::read_safetensors(path)
        }
    }

    /// Reads a `.safetensors` file: f32, f16, bf16 and f64 tensors, and integer tensors whose
    /// values f32 holds exactly (token ids, BatchNorm's step counts).
    pub fn read_safetensors(path: &Path) -> Result<Self, ImportError> {
        let err = |message: String| ImportError::Read { path: path.display().to_string(), message };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            if is_step_counter(&name) {
                continue;
            }
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                safetensors::Dtype::F64 => {
                    data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()
                }
                safetensors::Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                safetensors::Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                safetensors::Dtype::I64 => {
                    let ints = data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")));
                    let mut out = Vec::with_capacity(data.len() / 8);
                    for x in ints {
                        if x.unsigned_abs() > 1 << 24 {
                            return Err(err(format!("{name}: the integer {x} does not fit f32 exactly")));
                        }
                        out.push(x as f32);
                    }
                    out
                }
                other => return Err(err(format!("{name}: tensors of type {other:?} are not weights vlp can load"))),
            };
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(StateDict { tensors })
    }

    /// Writes the tensors as an f32 `.safetensors` file, under a temporary name renamed into
    /// place, so a failed write never leaves a partial file where a good one was.
    pub fn write_safetensors(&self, path: &Path) -> Result<(), ImportError> {
        let err = |message: String| ImportError::Read { path: path.display().to_string(), message };
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(k, (shape, values))| (k.clone(), shape.clone(), values.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let mut views = Vec::with_capacity(bytes.len());
        for (k, shape, b) in &bytes {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b).map_err(|e| err(format!("{k}: {e}")))?;
            views.push((k.as_str(), view));
        }
        let out = safetensors::serialize(views, None).map_err(|e| err(e.to_string()))?;
        vlp_atomic::write(path, &out).map_err(|e| err(e.to_string()))
    }

    /// Adds (or replaces) a tensor; `values` is row-major and must fill `shape`.
    pub fn insert(&mut self, key: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "values must fill the shape");
        self.tensors.insert(key.into(), (shape, values));
    }

    /// `(shape, values)` of a tensor.
    pub fn get(&self, key: &str) -> Option<(&[usize], &[f32])> {
        self.tensors.get(key).map(|(s, v)| (s.as_slice(), v.as_slice()))
    }

    /// Every tensor's name, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

/// Whether a key is BatchNorm's step counter (`num_batches_tracked`): an int64 that no forward
/// pass reads (vlp's BatchNorm uses a fixed momentum), so both readers leave it out rather than
/// refuse a count past 2²⁴.
pub fn is_step_counter(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
}

/// Where one vlp parameter comes from in an OpenCLIP state dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub key: String,
    /// A PyTorch `[out, in]` weight to be read as burn's `[in, out]`.
    pub transpose: bool,
}

/// The OpenCLIP key for a vlp parameter path (as burn's module visitor spells it, e.g.
/// `text.transformer.blocks.0.attn.qkv.weight`), or `None` for the parameters OpenCLIP lacks.
pub fn openclip_key(param: &str) -> Option<Source> {
    let plain = |key: String| Some(Source { key, transpose: false });
    if param == "logit_scale" {
        return plain("logit_scale".into());
    }
    if let Some(rest) = param.strip_prefix("image.ModifiedResnet.") {
        return modified_resnet_key(rest);
    }
    let (prefix, rest) = if let Some(rest) = param.strip_prefix("image.Vit.") {
        ("visual.", rest)
    } else if let Some(rest) = param.strip_prefix("text.") {
        ("", rest)
    } else {
        return None;
    };
    if let Some(block) = rest.strip_prefix("transformer.blocks.") {
        let (index, name) = block.split_once('.')?;
        let (name, transpose) = match name {
            "ln_1.gamma" => ("ln_1.weight", false),
            "ln_1.beta" => ("ln_1.bias", false),
            "ln_2.gamma" => ("ln_2.weight", false),
            "ln_2.beta" => ("ln_2.bias", false),
            "attn.qkv.weight" => ("attn.in_proj_weight", true),
            "attn.qkv.bias" => ("attn.in_proj_bias", false),
            "attn.out.weight" => ("attn.out_proj.weight", true),
            "attn.out.bias" => ("attn.out_proj.bias", false),
            "mlp_fc.weight" => ("mlp.c_fc.weight", true),
            "mlp_fc.bias" => ("mlp.c_fc.bias", false),
            "mlp_proj.weight" => ("mlp.c_proj.weight", true),
            "mlp_proj.bias" => ("mlp.c_proj.bias", false),
            _ => return None,
        };
        return Some(Source { key: format!("{prefix}transformer.resblocks.{index}.{name}"), transpose });
    }
    let name = match (prefix, rest) {
        ("visual.", "patch_embed.weight") => "conv1.weight",
        ("visual.", "class_token") => "class_embedding",
        ("visual.", "proj.weight") => "proj",
        ("", "proj.weight") => "text_projection",
        ("", "token_embedding.weight") => "token_embedding.weight",
        (_, "positional_embedding") => "positional_embedding",
        (_, norm) => {
            let (layer, which) = norm.split_once('.')?;
            if !matches!(layer, "ln_pre" | "ln_post" | "ln_final") {
                return None;
            }
            return plain(format!("{prefix}{layer}.{}", if which == "gamma" { "weight" } else { "bias" }));
        }
    };
    plain(format!("{prefix}{name}"))
}

/// OpenCLIP's `visual.*` key for a parameter of vlp's [`crate::modified_resnet::ModifiedResNet`]
/// (the path after `image.ModifiedResnet.`); `None` for vlp's own token projection.
fn modified_resnet_key(rest: &str) -> Option<Source> {
    let plain = |key: String| Some(Source { key, transpose: false });
    // a ConvBn's parameter under OpenCLIP's names for its convolution and its BatchNorm
    let conv_bn = |conv: &str, bn: &str, param: &str| -> Option<String> {
        Some(match param.split_once('.')? {
            ("conv", "weight") => format!("{conv}.weight"),
            ("bn", "gamma") => format!("{bn}.weight"),
            ("bn", "beta") => format!("{bn}.bias"),
            ("bn", stat @ ("running_mean" | "running_var")) => format!("{bn}.{stat}"),
            _ => return None,
        })
    };
    if let Some(r) = rest.strip_prefix("stem.") {
        let (i, param) = r.split_once('.')?;
        let n = i.parse::<usize>().ok()? + 1;
        return plain(format!("visual.{}", conv_bn(&format!("conv{n}"), &format!("bn{n}"), param)?));
    }
    if let Some(r) = rest.strip_prefix("stages.") {
        let (stage, r) = r.split_once('.')?;
        let (block, r) = r.split_once('.')?;
        let (part, param) = r.split_once('.')?;
        let (conv, bn) = match part {
            "reduce" => ("conv1", "bn1"),
            "spatial" => ("conv2", "bn2"),
            "expand" => ("conv3", "bn3"),
            "downsample" => ("downsample.0", "downsample.1"),
            _ => return None,
        };
        let layer = stage.parse::<usize>().ok()? + 1;
        return plain(format!("visual.layer{layer}.{block}.{}", conv_bn(conv, bn, param)?));
    }
    let r = rest.strip_prefix("attnpool.")?;
    match r.split_once('.') {
        None if r == "positional_embedding" => plain("visual.attnpool.positional_embedding".into()),
        Some((proj @ ("q_proj" | "k_proj" | "v_proj" | "c_proj"), which @ ("weight" | "bias"))) => {
            Some(Source { key: format!("visual.attnpool.{proj}.{which}"), transpose: which == "weight" })
        }
        _ => None,
    }
}

/// The vlp model config of an OpenCLIP model-config JSON (`embed_dim`, `vision_cfg`,
/// `text_cfg`, as `open_clip/model_configs/*.json`), for the architectures vlp builds: a ViT image
/// tower and a causal text tower pooled at the end token, with exact GELU or (`quick_gelu`)
/// OpenAI's QuickGELU. Any option vlp does not build (timm or Hugging Face towers, other
/// poolings, layer scale, ...) is refused by name rather than ignored; options that only change
/// training (`patch_dropout`, `cast_dtype`, ...) are accepted.
pub fn model_config(json: &serde_json::Value) -> Result<ModelConfig, ImportError> {
    let unsupported = |what: String| ImportError::Unsupported(format!("OpenCLIP config: {what}"));
    let obj = |v: &serde_json::Value, name: &str| -> Result<serde_json::Map<String, serde_json::Value>, ImportError> {
        v.get(name).and_then(|x| x.as_object()).cloned().ok_or_else(|| unsupported(format!("no `{name}` object")))
    };
    let top = json.as_object().ok_or_else(|| unsupported("not a JSON object".into()))?;
    let mut activation = Activation::Gelu;
    for (k, v) in top {
        let accepted = match k.as_str() {
            "embed_dim" | "vision_cfg" | "text_cfg" | "cast_dtype" | "custom_text" => true,
            "quick_gelu" => match v.as_bool() {
                Some(q) => {
                    activation = if q { Activation::QuickGelu } else { Activation::Gelu };
                    true
                }
                None => false,
            },
            "init_logit_bias" => v.is_null(),
            _ => false,
        };
        if !accepted {
            return Err(unsupported(format!("`{k}` = {v} is not supported")));
        }
    }
    if top.get("custom_text").is_some_and(|v| v != &serde_json::Value::Bool(false)) {
        return Err(unsupported("`custom_text` towers (Hugging Face text models) are not supported".into()));
    }
    let vision = obj(json, "vision_cfg")?;
    let text = obj(json, "text_cfg")?;
    let field = |m: &serde_json::Map<String, serde_json::Value>, section: &str, name: &str, default: Option<f64>| match m.get(name) {
        Some(v) => v.as_f64().ok_or_else(|| unsupported(format!("{section}.{name} = {v} is not a number"))),
        None => default.ok_or_else(|| unsupported(format!("{section}.{name} is missing"))),
    };
    // Options whose value vlp builds as OpenCLIP does only at OpenCLIP's default; anything else
    // would load without error and embed differently, so it is refused.
    let at_default = |section: &str,
                      m: &serde_json::Map<String, serde_json::Value>,
                      name: &str,
                      ok: &dyn Fn(&serde_json::Value) -> bool| match m.get(name) {
        Some(v) if !ok(v) => Err(unsupported(format!("{section}.{name} = {v} is not supported"))),
        _ => Ok(()),
    };
    let null_or = |want: &'static str| move |v: &serde_json::Value| v.is_null() || v.as_str() == Some(want);
    let is_false = |v: &serde_json::Value| v == &serde_json::Value::Bool(false) || v.is_null();
    let is_zero_or_null = |v: &serde_json::Value| v.is_null() || v.as_f64() == Some(0.0);
    // `patch_dropout` and `output_tokens` change training or what else is returned, not the
    // embeddings, and are accepted as they are.
    let known_vision = [
        "image_size",
        "layers",
        "width",
        "head_width",
        "patch_size",
        "mlp_ratio",
        "ls_init_value",
        "attentional_pool",
        "no_ln_pre",
        "pool_type",
        "final_ln_after_pool",
        "output_tokens",
        "patch_dropout",
        "pos_embed_type",
    ];
    let known_text = [
        "context_length",
        "vocab_size",
        "width",
        "heads",
        "layers",
        "mlp_ratio",
        "ls_init_value",
        "pool_type",
        "eos_id",
        "proj_bias",
        "no_causal_mask",
        "embed_cls",
        "pad_id",
        "output_tokens",
        "final_ln_after_pool",
    ];
    for (section, m, known) in [("vision_cfg", &vision, &known_vision[..]), ("text_cfg", &text, &known_text[..])] {
        if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(unsupported(format!("{section}.{k} = {} is not supported", m[k])));
        }
        at_default(section, m, "ls_init_value", &is_zero_or_null)?;
        at_default(section, m, "final_ln_after_pool", &is_false)?;
    }
    at_default("vision_cfg", &vision, "attentional_pool", &is_false)?;
    at_default("vision_cfg", &vision, "no_ln_pre", &is_false)?;
    at_default("vision_cfg", &vision, "pool_type", &null_or("tok"))?;
    at_default("vision_cfg", &vision, "pos_embed_type", &null_or("learnable"))?;
    // vlp pools at the last real token: OpenCLIP's `argmax` (the end token has the largest id in
    // its BPE vocabulary, and comes last) and `eos` pick the same one.
    at_default("text_cfg", &text, "pool_type", &|v| null_or("argmax")(v) || v.as_str() == Some("eos"))?;
    at_default("text_cfg", &text, "proj_bias", &is_false)?;
    at_default("text_cfg", &text, "no_causal_mask", &is_false)?;
    at_default("text_cfg", &text, "embed_cls", &is_false)?;
    let v = |name: &str, default: Option<f64>| field(&vision, "vision_cfg", name, default).map(|x| x as usize);
    let t = |name: &str, default: Option<f64>| field(&text, "text_cfg", name, default);
    let head_width = v("head_width", Some(64.0))?;
    let image = match vision.get("layers") {
        // a list of block counts: OpenCLIP's ModifiedResNet (RN50, ...), whose attention pool is
        // 32 · width wide; `quick_gelu` concerns its text tower only
        Some(serde_json::Value::Array(stages)) => {
            let layers = stages
                .iter()
                .map(|n| n.as_u64().map(|n| n as usize))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| unsupported(format!("vision_cfg.layers = {} is not a list of block counts", vision["layers"])))?;
            let width = v("width", Some(64.0))?;
            if head_width == 0 || (32 * width) % head_width != 0 {
                return Err(unsupported(format!("vision_cfg.head_width = {head_width} does not divide the pool's width 32 × {width}")));
            }
            ImageTowerConfig::ModifiedResnet(ModifiedResnetConfig {
                image_size: v("image_size", Some(224.0))?,
                layers,
                width,
                heads: 32 * width / head_width,
            })
        }
        _ => {
            let width = v("width", Some(768.0))?;
            if head_width == 0 || width % head_width != 0 {
                return Err(unsupported(format!("vision_cfg.head_width = {head_width} does not divide vision_cfg.width = {width}")));
            }
            ImageTowerConfig::Vit(VitConfig {
                image_size: v("image_size", Some(224.0))?,
                patch_size: v("patch_size", Some(16.0))?,
                width,
                layers: v("layers", Some(12.0))?,
                heads: width / head_width,
                mlp_ratio: field(&vision, "vision_cfg", "mlp_ratio", Some(4.0))?,
                token_reduction: None,
                activation,
            })
        }
    };
    let cfg = ModelConfig {
        embed_dim: field(top, "", "embed_dim", None)? as usize,
        token_dim: None,
        image,
        text: TextTowerConfig {
            context_length: t("context_length", Some(77.0))? as usize,
            vocab_size: t("vocab_size", Some(49408.0))? as usize,
            width: t("width", Some(512.0))? as usize,
            layers: t("layers", Some(12.0))? as usize,
            heads: t("heads", Some(8.0))? as usize,
            mlp_ratio: t("mlp_ratio", Some(4.0))?,
            causal: true,
            pool: TextPool::Eos,
            activation,
            norm: BlockNorm::Pre,
            layer_norm_eps: 1e-5,
        },
    };
    cfg.validate().map_err(|e| unsupported(e.to_string()))?;
    Ok(cfg)
}

struct Loader<'a> {
    state: &'a StateDict,
    path: Vec<String>,
    used: BTreeSet<String>,
    errors: Vec<ImportError>,
}

impl<B: Backend> ModuleMapper<B> for Loader<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.join(".");
        let Some(source) = openclip_key(&name) else { return param };
        // the shape without drawing the value: the model was built for loading
        let expected = param.lazy_shape().dims::<D>().to_vec();
        let Some((shape, values)) = self.state.get(&source.key) else {
            self.errors.push(ImportError::Missing { key: source.key, param: name });
            return param;
        };
        self.used.insert(source.key.clone());
        // OpenCLIP's logit_scale is a 0-d scalar; vlp's is `[1]`.
        let found: Vec<usize> = match (shape, source.transpose) {
            ([], _) => vec![1],
            ([rows, cols], true) => vec![*cols, *rows],
            _ => shape.to_vec(),
        };
        if found != expected {
            self.errors.push(ImportError::Shape { key: source.key, param: name, expected, found });
            return param;
        }
        let values = if source.transpose { transposed(values, shape[0], shape[1]) } else { values.to_vec() };
        let loaded = Tensor::<B, D>::from_data(TensorData::new(values, found), &param.lazy_device());
        // as burn's own loading: the parameter's device and gradient setting, never its draw
        let id = param.id;
        param.transform_for_load(loaded, id)
    }
}

/// A row-major `[rows, cols]` matrix as row-major `[cols, rows]` (PyTorch's `[out, in]` and
/// burn's `[in, out]`, either way).
fn transposed(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols).map(|k| values[(k % rows) * cols + k / rows]).collect()
}

/// Fills `model` from an OpenCLIP state dict of the same architecture; see the module docs.
pub fn load_openclip<B: Backend>(model: DualEncoder<B>, state: &StateDict) -> Result<DualEncoder<B>, ImportError> {
    if matches!(model.image, ImageTower::Resnet(_)) {
        return Err(ImportError::Unsupported(
            "vlp's own ResNet tower (model.image.kind = \"resnet\") has no OpenCLIP counterpart; OpenCLIP's RN50 family is kind = \"modified_resnet\"".into(),
        ));
    }
    let mut loader = Loader { state, path: Vec::new(), used: BTreeSet::new(), errors: Vec::new() };
    let model = model.map(&mut loader);
    if let Some(first) = loader.errors.into_iter().next() {
        return Err(first);
    }
    let unused: Vec<String> = state.keys().filter(|k| !loader.used.contains(*k)).map(str::to_string).collect();
    if !unused.is_empty() {
        return Err(ImportError::Unused { keys: unused });
    }
    Ok(model)
}

/// The model's weights under OpenCLIP's names and in its layout: the inverse of
/// [`load_openclip`]. Parameters OpenCLIP has no place for (the per-token projections and
/// temperature of the FILIP loss, Wukong's token reduction) are left out: they do not enter the
/// global embeddings OpenCLIP computes. Refuses the towers OpenCLIP's `CLIP` class cannot hold.
pub fn to_state_dict<B: Backend>(model: &DualEncoder<B>) -> Result<StateDict, ImportError> {
    if matches!(model.image, ImageTower::Resnet(_)) {
        return Err(ImportError::Unsupported(
            "vlp's own ResNet tower (model.image.kind = \"resnet\") cannot be written in OpenCLIP's layout; its ModifiedResNet is kind = \"modified_resnet\"".into(),
        ));
    }
    struct Writer {
        path: Vec<String>,
        out: StateDict,
    }
    impl<B: Backend> burn::module::ModuleVisitor<B> for Writer {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let Some(source) = openclip_key(&self.path.join(".")) else { return };
            let t = param.val();
            let shape = t.dims().to_vec();
            let values = t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 values");
            let (shape, values) = match (source.key.as_str(), source.transpose, shape.as_slice()) {
                // vlp's `[1]` temperature is OpenCLIP's 0-d scalar
                ("logit_scale", _, _) => (vec![], values),
                // burn's `[in, out]` back to PyTorch's `[out, in]`
                (_, true, &[rows, cols]) => (vec![cols, rows], transposed(&values, rows, cols)),
                _ => (shape, values),
            };
            self.out.insert(source.key, shape, values);
        }
    }
    let mut w = Writer { path: Vec::new(), out: StateDict::default() };
    model.visit(&mut w);
    Ok(w.out)
}

/// OpenCLIP's model config for a vlp model config (the inverse of [`model_config`]). `eos_id`:
/// the text tower's end token when it is not the tokenizer's largest id (a WordPiece `[SEP]`),
/// so that OpenCLIP pools where vlp does; `None` keeps OpenCLIP's `argmax` pooling.
pub fn openclip_config(cfg: &ModelConfig, eos_id: Option<u32>) -> Result<serde_json::Value, ImportError> {
    let t = &cfg.text;
    // the ModifiedResNet has no MLP: OpenCLIP's `quick_gelu` is then the text tower's alone
    let (vision, image_activation) = match &cfg.image {
        ImageTowerConfig::Vit(v) => (
            serde_json::json!({"image_size": v.image_size, "layers": v.layers, "width": v.width, "head_width": v.width / v.heads,
                "patch_size": v.patch_size, "mlp_ratio": v.mlp_ratio}),
            v.activation,
        ),
        ImageTowerConfig::ModifiedResnet(r) => (
            serde_json::json!({"image_size": r.image_size, "layers": r.layers, "width": r.width, "head_width": 32 * r.width / r.heads,
                "patch_size": null}),
            t.activation,
        ),
        ImageTowerConfig::Resnet(_) => {
            return Err(ImportError::Unsupported("vlp's own ResNet tower (model.image.kind = \"resnet\") has no OpenCLIP config".into()))
        }
    };
    if !t.causal || t.pool != TextPool::Eos || t.norm != BlockNorm::Pre {
        return Err(ImportError::Unsupported(
            "OpenCLIP's text tower is causal and pooled at the end token; this model's is not (model.text.causal, model.text.pool)".into(),
        ));
    }
    if image_activation != t.activation {
        return Err(ImportError::Unsupported("OpenCLIP's `quick_gelu` is one switch for both towers; this model's towers differ (model.image.activation, model.text.activation)".into()));
    }
    let mut text = serde_json::json!({"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
        "heads": t.heads, "layers": t.layers, "mlp_ratio": t.mlp_ratio});
    if let Some(id) = eos_id {
        text["pool_type"] = "eos".into();
        text["eos_id"] = id.into();
    }
    Ok(serde_json::json!({
        "embed_dim": cfg.embed_dim,
        "quick_gelu": t.activation == Activation::QuickGelu,
        "vision_cfg": vision,
        "text_cfg": text,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// open_clip 3.3's own `model_configs/*.json` for the families the import supports.
    #[test]
    fn openclip_model_configs_of_the_supported_families_parse() {
        let text = r#""text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}"#;
        let cases = [
            (format!(r#"{{"embed_dim": 512, "vision_cfg": {{"image_size": 224, "layers": 12, "width": 768, "patch_size": 32}}, {text}}}"#), 12, Activation::Gelu),
            (format!(r#"{{"embed_dim": 512, "vision_cfg": {{"image_size": 224, "layers": 12, "width": 768, "patch_size": 16}}, {text}}}"#), 12, Activation::Gelu),
            (format!(r#"{{"embed_dim": 512, "quick_gelu": true, "vision_cfg": {{"image_size": 224, "layers": 12, "width": 768, "patch_size": 32}}, {text}}}"#), 12, Activation::QuickGelu),
            (r#"{"embed_dim": 768, "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12}}"#.to_string(), 16, Activation::Gelu),
            (r#"{"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}}"#.to_string(), 16, Activation::Gelu),
        ];
        for (json, heads, activation) in cases {
            let cfg = model_config(&serde_json::from_str(&json).unwrap()).unwrap();
            let ImageTowerConfig::Vit(v) = &cfg.image else { panic!("a ViT") };
            assert_eq!((v.heads, v.activation, cfg.text.activation), (heads, activation, activation), "{json}");
        }
        // open_clip's RN50.json and RN50x4.json: the ModifiedResNet, 32 · width / 64 heads
        for (json, want) in [
            (
                r#"{"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": [3, 4, 6, 3], "width": 64, "patch_size": null}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}"#,
                ModifiedResnetConfig { image_size: 224, layers: vec![3, 4, 6, 3], width: 64, heads: 32 },
            ),
            (
                r#"{"embed_dim": 640, "quick_gelu": true, "vision_cfg": {"image_size": 288, "layers": [4, 6, 10, 6], "width": 80, "patch_size": null}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 640, "heads": 10, "layers": 12}}"#,
                ModifiedResnetConfig { image_size: 288, layers: vec![4, 6, 10, 6], width: 80, heads: 40 },
            ),
        ] {
            let cfg = model_config(&serde_json::from_str(json).unwrap()).unwrap();
            assert_eq!(cfg.image, ImageTowerConfig::ModifiedResnet(want), "{json}");
            let back = openclip_config(&cfg, None).unwrap();
            assert_eq!(model_config(&back).unwrap(), cfg, "{back}");
        }
        let three_stages =
            r#"{"embed_dim": 64, "vision_cfg": {"layers": [1, 1, 1], "width": 8}, "text_cfg": {"width": 32, "heads": 2, "layers": 1}}"#;
        let err = model_config(&serde_json::from_str(three_stages).unwrap()).unwrap_err().to_string();
        assert!(err.contains("four stages"), "{err}");
    }

    /// Every parameter of a ModifiedResNet has its OpenCLIP key, as open_clip 3.3 names them
    /// (`visual.layer1.0.downsample.0.weight`, ...), but vlp's token projection.
    #[test]
    fn modified_resnet_keys_are_openclips() {
        let key = |p: &str| openclip_key(&format!("image.ModifiedResnet.{p}")).map(|s| (s.key, s.transpose));
        let k = |s: &str, t: bool| Some((s.to_string(), t));
        assert_eq!(key("stem.0.conv.weight"), k("visual.conv1.weight", false));
        assert_eq!(key("stem.2.bn.running_var"), k("visual.bn3.running_var", false));
        assert_eq!(key("stages.0.0.downsample.conv.weight"), k("visual.layer1.0.downsample.0.weight", false));
        assert_eq!(key("stages.3.2.expand.bn.gamma"), k("visual.layer4.2.bn3.weight", false));
        assert_eq!(key("stages.1.3.spatial.bn.beta"), k("visual.layer2.3.bn2.bias", false));
        assert_eq!(key("attnpool.positional_embedding"), k("visual.attnpool.positional_embedding", false));
        assert_eq!(key("attnpool.c_proj.weight"), k("visual.attnpool.c_proj.weight", true));
        assert_eq!(key("attnpool.q_proj.bias"), k("visual.attnpool.q_proj.bias", false));
        assert_eq!(key("token_proj.weight"), None);
    }
}
