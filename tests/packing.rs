//! Parameters packed into many buckets train exactly as packed into one: AdamW and the
//! EMA act element by element, so where a bucket ends changes no value. (A model larger
//! than one storage binding is packed into several: ViT-B's encoder on lavapipe's
//! 128 MiB limit.) Alone in its process, since it lowers the device's packing limit.

mod common;

use common::device;
use train::config::PretrainConfig;
use train::synthetic::SyntheticRun;

#[test]
fn many_buckets_train_bit_for_bit_as_one() {
    let dev = device();
    let mut config = PretrainConfig::preset("fmnist-cpu").unwrap();
    config.batch_size = 8;
    config.grad_clip = 0.0;
    let steps = 3;
    let train = |limit: Option<u64>| {
        dev.set_packing_limit(limit);
        let mut run = SyntheticRun::new(&dev, config.clone(), steps).unwrap();
        dev.set_packing_limit(None);
        let buckets = run.state.optimizer.parameter_buckets(0).buckets.len();
        for s in 0..steps {
            run.step(s, false).unwrap();
        }
        let values = |tensors: Vec<&engine::Tensor>| -> Vec<Vec<f32>> {
            tensors.iter().map(|t| t.to_vec()).collect()
        };
        let params = run.state.model.named_params();
        let moments = run.state.optimizer.moments();
        (
            buckets,
            values(params.iter().map(|(_, t)| t).collect()),
            values(moments.iter().flat_map(|(_, m, v)| [*m, *v]).collect()),
        )
    };
    let (one, params, moments) = train(None);
    // 16 KiB buckets: the encoder's 52 tensors (201 k values with the predictor's)
    // spread over many.
    let (many, split_params, split_moments) = train(Some(16 << 10));
    assert_eq!(one, 1, "the fmnist-cpu encoder fits one binding");
    assert!(
        many > 10,
        "a 16 KiB limit packed the encoder into {many} buckets"
    );
    assert!(
        params == split_params,
        "parameters differ after {steps} steps"
    );
    assert!(
        moments == split_moments,
        "AdamW moments differ after {steps} steps"
    );
}
