//! `embed_image` and `embed_text`, the global embeddings alone (what retrieval and scoring use),
//! against the `global` of `encode_image` and `encode_text` for every image tower and text
//! pooling: the same numbers, without the token projection.

use burn::backend::Flex;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use vlp_model::ModelConfig;

type B = Flex;

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn config(image: &str, text: &str) -> ModelConfig {
    toml::from_str(&format!(
        "embed_dim = 8\n[image]\n{image}\n[text]\ncontext_length = 6\nvocab_size = 20\nwidth = 8\nlayers = 1\nheads = 2\n{text}\n"
    ))
    .unwrap()
}

#[test]
fn the_global_embeddings_alone_equal_those_of_the_full_outputs() {
    let device = Default::default();
    let images = [
        "kind = \"vit\"\nimage_size = 8\npatch_size = 4\nwidth = 8\nlayers = 1\nheads = 2",
        "kind = \"resnet\"\nimage_size = 16\nlayers = [1, 1]\nwidth = 4\npool = \"attention\"\nheads = 2",
        "kind = \"resnet\"\nimage_size = 16\nlayers = [1, 1]\nwidth = 4\npool = \"mean\"",
        "kind = \"modified_resnet\"\nimage_size = 64\nlayers = [1, 1, 1, 1]\nwidth = 4\nheads = 2",
    ];
    let texts = ["causal = true\npool = \"eos\"", "causal = false\npool = \"cls\"\nnorm = \"post\"", "causal = false\npool = \"mean\""];
    // two texts of 6 and 3 real tokens
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 5, 7, 2, 9, 3, 1, 4, 3, 0, 0, 0], [2, 6]), &device);
    let mask = Tensor::<B, 2>::from_data(TensorData::new(vec![1f32, 1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 0.], [2, 6]), &device);
    for (image, text) in images.iter().zip(texts.iter().cycle()) {
        let cfg = config(image, text);
        let model = cfg.init::<B>(&device);
        let s = cfg.image_size();
        let x = Tensor::<B, 4>::random([2, 3, s, s], Distribution::Normal(0.0, 1.0), &device);
        let want = values(model.encode_image(x.clone()).global);
        assert_eq!(values(model.embed_image(x)), want, "{image}");
        let want = values(model.encode_text(ids.clone(), mask.clone()).global);
        assert_eq!(values(model.embed_text(ids.clone(), mask.clone())), want, "{text}");
    }
}
