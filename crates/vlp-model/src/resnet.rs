//! ResNet-style image tower (after CLIP's ModifiedResNet): a three-convolution stem, bottleneck
//! stages with anti-aliased (average-pool) downsampling, then attention or mean pooling.

use crate::attention::{SelfAttention, SelfAttentionConfig};
use crate::config::{ResnetConfig, ResnetPool};
use crate::dual::{l2_normalize, TowerOutput};
use crate::init::{Init, LinearInit};
use crate::tokenwise_linear::per_token;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// A `k×k` convolution without bias, drawn as PyTorch's `nn.Conv2d`: U(±1/√(cin·k²)).
fn conv<B: Backend>(cin: usize, cout: usize, k: usize, stride: usize, device: &B::Device) -> Conv2d<B> {
    Conv2d {
        weight: Init::torch_default(cin * k * k).param([cout, cin, k, k], device),
        ..Conv2dConfig::new([cin, cout], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
            .with_bias(false)
            .init(device)
    }
}

pub(crate) fn pool(k: usize) -> AvgPool2d {
    AvgPool2dConfig::new([k, k]).with_strides([k, k]).init()
}

/// A `k×k` convolution (padding `k/2`, no bias) and its BatchNorm.
#[derive(Module, Debug)]
pub struct ConvBn<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
}

impl<B: Backend> ConvBn<B> {
    fn new(cin: usize, cout: usize, k: usize, device: &B::Device) -> Self {
        Self::strided(cin, cout, k, 1, device)
    }
    pub(crate) fn strided(cin: usize, cout: usize, k: usize, stride: usize, device: &B::Device) -> Self {
        ConvBn { conv: conv(cin, cout, k, stride, device), bn: BatchNormConfig::new(cout).init(device) }
    }
    /// `[b, cin, h, w]` → `[b, cout, h/stride, w/stride]`, before any activation.
    pub(crate) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        crate::cpu::batch_norm::batch_norm(&self.bn, crate::autocast::conv2d(&self.conv, x))
    }
}

#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    reduce: ConvBn<B>,
    spatial: ConvBn<B>,
    expand: ConvBn<B>,
    /// Present when the shape changes: avg-pool, then 1×1 conv + BN.
    downsample: Option<ConvBn<B>>,
    stride: usize,
}

impl<B: Backend> Bottleneck<B> {
    /// The last BatchNorm's γ starts at 0, as OpenCLIP's `ModifiedResNet.init_parameters` does
    /// (`bn3.weight`): every block starts as its shortcut.
    pub(crate) fn new(cin: usize, planes: usize, stride: usize, device: &B::Device) -> Self {
        let out = planes * 4;
        let mut expand = ConvBn::new(planes, out, 1, device);
        expand.bn.gamma = Init::Zeros.param([out], device);
        Bottleneck {
            reduce: ConvBn::new(cin, planes, 1, device),
            spatial: ConvBn::new(planes, planes, 3, device),
            expand,
            downsample: (stride > 1 || cin != out).then(|| ConvBn::new(cin, out, 1, device)),
            stride,
        }
    }

    /// `[b, cin, h, w]` → `[b, 4·planes, h/stride, w/stride]`
    pub(crate) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut y = relu(self.reduce.forward(x.clone()));
        y = relu(self.spatial.forward(y));
        if self.stride > 1 {
            y = pool(self.stride).forward(y);
        }
        y = self.expand.forward(y);
        let identity = match &self.downsample {
            Some(d) => d.forward(if self.stride > 1 { pool(self.stride).forward(x) } else { x }),
            None => x,
        };
        relu(y + identity)
    }
}

#[derive(Module, Debug)]
pub struct ResNetTower<B: Backend> {
    stem: Vec<ConvBn<B>>,
    stem_stride: Conv2d<B>,
    blocks: Vec<Bottleneck<B>>,
    /// Attention pooling: positions for [mean token, grid tokens] and one attention layer.
    pool_positions: Option<Param<Tensor<B, 2>>>,
    pool_attention: Option<SelfAttention<B>>,
    proj: Linear<B>,
    token_proj: Linear<B>,
}

impl ResnetConfig {
    pub fn out_channels(&self) -> usize {
        (self.width * 4) << (self.layers.len() - 1)
    }

    pub fn grid(&self) -> usize {
        self.image_size / (4 << (self.layers.len() - 1))
    }

    /// OpenCLIP's `ModifiedResNet` as it starts (see [`crate::init`]): convolutions U(±1/√fan_in),
    /// each bottleneck's last BatchNorm γ 0, the attention pool's positions and its q/k/v and
    /// output weights N(0, c^-½) (biases PyTorch's default), projections N(0, c^-½).
    pub fn init<B: Backend>(&self, embed_dim: usize, token_dim: usize, device: &B::Device) -> ResNetTower<B> {
        let half = (self.width / 2).max(1);
        let stem = vec![ConvBn::new(half, half, 3, device), ConvBn::new(half, self.width, 3, device)];
        let mut blocks = Vec::new();
        let mut cin = self.width;
        for (stage, &n) in self.layers.iter().enumerate() {
            let planes = self.width << stage;
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(Bottleneck::new(cin, planes, stride, device));
                cin = planes * 4;
            }
        }
        let c = self.out_channels();
        let attention = self.pool == ResnetPool::Attention;
        let std = (c as f64).powf(-0.5);
        let pool_linear = LinearInit { weight: Init::Normal(std), bias: Some(Init::torch_default(c)) };
        ResNetTower {
            stem,
            stem_stride: conv(3, half, 3, 2, device),
            blocks,
            pool_positions: attention.then(|| Init::Normal(std).param([1 + self.grid().pow(2), c], device)),
            pool_attention: attention
                .then(|| SelfAttentionConfig { width: c, heads: self.heads, qkv: pool_linear, out: pool_linear }.init(device)),
            proj: LinearInit::projection(std).init(c, embed_dim, device),
            token_proj: LinearInit::projection(std).init(c, token_dim, device),
        }
    }
}

impl<B: Backend> ResNetTower<B> {
    /// `images`: `[batch, 3, size, size]` → global `[batch, embed]`, tokens `[batch, grid², token_dim]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> TowerOutput<B> {
        let tokens = self.trunk(images);
        TowerOutput { global: self.global(tokens.clone()), tokens: l2_normalize(per_token(&self.token_proj, tokens)), token_mask: None }
    }

    /// The global embedding of [`Self::forward`] alone, `[batch, embed]`.
    pub fn forward_global(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.global(self.trunk(images))
    }

    /// `images` → the last stage's grid as tokens, `[batch, grid², channels]`.
    fn trunk(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let mut x = crate::autocast::conv2d(&self.stem_stride, images);
        for s in &self.stem {
            x = relu(s.forward(x));
        }
        x = pool(2).forward(x);
        for block in &self.blocks {
            x = block.forward(x);
        }
        let [b, c, h, w] = x.dims();
        x.reshape([b, c, h * w]).swap_dims(1, 2)
    }

    /// The grid's tokens pooled (attention or mean), projected and normalised.
    fn global(&self, tokens: Tensor<B, 3>) -> Tensor<B, 2> {
        let b = tokens.dims()[0];
        let mean = tokens.clone().mean_dim(1); // [b, 1, c]
        let pooled = match (&self.pool_attention, &self.pool_positions) {
            (Some(attn), Some(pos)) => {
                let seq = Tensor::cat(vec![mean, tokens.clone()], 1) + pos.val().unsqueeze_dim(0);
                attn.forward(seq, None, false).slice([0..b, 0..1]).squeeze_dim::<2>(1)
            }
            _ => mean.squeeze_dim::<2>(1),
        };
        l2_normalize(crate::autocast::linear(&self.proj, pooled))
    }
}
