//! The generated tree ensemble, run by tract from its ONNX bytes, gives the
//! probabilities its plain evaluation gives — on rows around and exactly
//! at every threshold — and bad input is refused with its reason.

#![allow(clippy::expect_used)]

use sotto_onnx::{Node, OnnxError, OnnxModel, TreeEnsemble};

fn ensemble() -> TreeEnsemble {
    TreeEnsemble {
        features: 3,
        trees: vec![
            vec![
                Node::Branch {
                    feature: 0,
                    threshold: 10.0,
                    yes: 1,
                    no: 2,
                },
                Node::Branch {
                    feature: 2,
                    threshold: -1.5,
                    yes: 3,
                    no: 4,
                },
                Node::Leaf { weight: -1.0 },
                Node::Leaf { weight: 0.75 },
                Node::Leaf { weight: 0.2 },
            ],
            vec![
                Node::Branch {
                    feature: 1,
                    threshold: 0.5,
                    yes: 1,
                    no: 2,
                },
                Node::Leaf { weight: 0.3 },
                Node::Leaf { weight: -0.45 },
            ],
        ],
    }
}

#[test]
fn tract_agrees_with_the_plain_evaluation() {
    let trees = ensemble();
    let model = OnnxModel::load(&trees.to_onnx(), 3).expect("tract loads the generated model");
    let mut checked = 0;
    for a in [-5.0f32, 9.99, 10.0, 10.01, 1e6] {
        for b in [0.0f32, 0.5, 0.51] {
            for c in [-1.5f32, -1.49, -3.0, 2.0] {
                let row = [a, b, c];
                let expected = trees.probability(&row);
                let got = model.probability(&row).expect("runs");
                assert!(
                    (got - expected).abs() < 1e-6,
                    "{row:?}: tract {got}, plain {expected}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 60);
    let low = trees.probability(&[0.0, 0.0, -2.0]);
    let expected = 1.0 / (1.0 + (-(0.75f32 + 0.3)).exp());
    assert!(
        (low - expected).abs() < 1e-7,
        "the plain evaluation itself: {low}"
    );
}

#[test]
fn a_row_of_another_width_and_bytes_that_are_not_onnx_are_refused() {
    let model = OnnxModel::load(&ensemble().to_onnx(), 3).expect("loads");
    assert!(matches!(
        model.probability(&[1.0, 2.0]),
        Err(OnnxError::Width {
            expected: 3,
            got: 2
        })
    ));
    assert!(matches!(
        OnnxModel::load(b"not an onnx model", 3),
        Err(OnnxError::Load(_))
    ));
}
