//! A gradient-boosted-tree binary classifier as ONNX-ML writes it (one
//! `TreeEnsembleClassifier` node, class labels 0 and 1, every leaf voting
//! for class 0, a logistic post-transform, so the probability of class 1
//! is `sigmoid(Σ leaf weights)` — the layout skl2onnx gives a binary
//! gradient-boosting model), built in Rust so that tests and the demo need
//! no file from elsewhere; and its plain evaluation.

use prost::Message;
use tract_onnx::pb;

/// One node of a tree, addressed by its index in the tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// Go to `yes` when `row[feature] <= threshold`, else to `no`.
    Branch {
        /// The feature read.
        feature: usize,
        /// The threshold.
        threshold: f32,
        /// The node when the test holds.
        yes: usize,
        /// The node when it does not.
        no: usize,
    },
    /// Adds `weight` to the score.
    Leaf {
        /// The leaf's contribution.
        weight: f32,
    },
}

/// Trees whose leaf weights add up to the log-odds of class 1.
#[derive(Clone, Debug, PartialEq)]
pub struct TreeEnsemble {
    /// Features per row.
    pub features: usize,
    /// Each tree's nodes; node 0 is the root.
    pub trees: Vec<Vec<Node>>,
}

fn ints(name: &str, values: impl IntoIterator<Item = i64>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.into_iter().collect(),
        ..Default::default()
    }
}

fn floats(name: &str, values: impl IntoIterator<Item = f32>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Floats as i32,
        floats: values.into_iter().collect(),
        ..Default::default()
    }
}

fn strings(name: &str, values: impl IntoIterator<Item = String>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Strings as i32,
        strings: values.into_iter().map(String::into_bytes).collect(),
        ..Default::default()
    }
}

fn string(name: &str, value: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A tensor value named `name` of ONNX element type `elem_type` and `dims`
/// (`None`: the batch dimension `N`).
fn value(name: &str, elem_type: i32, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v),
                None => dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// ONNX element types used here.
const FLOAT: i32 = 1;
const INT64: i32 = 7;

impl TreeEnsemble {
    /// The probability of class 1 for `row`, computed directly.
    pub fn probability(&self, row: &[f32]) -> f32 {
        let mut score = 0f32;
        for tree in &self.trees {
            let mut at = 0;
            // A tree has no cycles when built by `checked`; bound the walk
            // anyway.
            for _ in 0..=tree.len() {
                match tree.get(at) {
                    Some(Node::Branch {
                        feature,
                        threshold,
                        yes,
                        no,
                    }) => {
                        let x = row.get(*feature).copied().unwrap_or(f32::NAN);
                        at = if x <= *threshold { *yes } else { *no };
                    }
                    Some(Node::Leaf { weight }) => {
                        score += weight;
                        break;
                    }
                    None => break,
                }
            }
        }
        1.0 / (1.0 + (-score).exp())
    }

    /// The model as ONNX bytes: input `features` (float, N × features),
    /// outputs `label` (int64, N) and `probabilities` (float, N × 2).
    pub fn to_onnx(&self) -> Vec<u8> {
        let mut attrs: Vec<(&str, Vec<i64>)> = [
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "class_treeids",
            "class_nodeids",
            "class_ids",
        ]
        .into_iter()
        .map(|n| (n, Vec::new()))
        .collect();
        let (mut values, mut modes, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        for (t, tree) in self.trees.iter().enumerate() {
            for (n, node) in tree.iter().enumerate() {
                let (feature, threshold, yes, no, mode) = match node {
                    Node::Branch {
                        feature,
                        threshold,
                        yes,
                        no,
                    } => (*feature, *threshold, *yes, *no, "BRANCH_LEQ"),
                    Node::Leaf { weight } => {
                        for (name, v) in
                            [("class_treeids", t), ("class_nodeids", n), ("class_ids", 0)]
                        {
                            if let Some((_, list)) = attrs.iter_mut().find(|(a, _)| *a == name) {
                                list.push(v as i64);
                            }
                        }
                        weights.push(*weight);
                        (0, 0.0, 0, 0, "LEAF")
                    }
                };
                for (name, v) in [
                    ("nodes_treeids", t),
                    ("nodes_nodeids", n),
                    ("nodes_featureids", feature),
                    ("nodes_truenodeids", yes),
                    ("nodes_falsenodeids", no),
                ] {
                    if let Some((_, list)) = attrs.iter_mut().find(|(a, _)| *a == name) {
                        list.push(v as i64);
                    }
                }
                values.push(threshold);
                modes.push(mode.to_owned());
            }
        }
        let mut attribute: Vec<pb::AttributeProto> =
            attrs.into_iter().map(|(n, v)| ints(n, v)).collect();
        attribute.extend([
            floats("nodes_values", values),
            strings("nodes_modes", modes),
            floats("class_weights", weights),
            ints("classlabels_int64s", [0, 1]),
            string("post_transform", "LOGISTIC"),
        ]);
        let node = pb::NodeProto {
            input: vec!["features".into()],
            output: vec!["label".into(), "probabilities".into()],
            name: "trees".into(),
            op_type: "TreeEnsembleClassifier".into(),
            domain: "ai.onnx.ml".into(),
            attribute,
            ..Default::default()
        };
        let features = i64::try_from(self.features).unwrap_or(i64::MAX);
        let graph = pb::GraphProto {
            node: vec![node],
            name: "sotto-tree-ensemble".into(),
            input: vec![value("features", FLOAT, &[None, Some(features)])],
            output: vec![
                value("label", INT64, &[None]),
                value("probabilities", FLOAT, &[None, Some(2)]),
            ],
            ..Default::default()
        };
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![
                pb::OperatorSetIdProto {
                    domain: String::new(),
                    version: 17,
                },
                pb::OperatorSetIdProto {
                    domain: "ai.onnx.ml".into(),
                    version: 3,
                },
            ],
            producer_name: "sotto".into(),
            graph: Some(graph),
            ..Default::default()
        };
        model.encode_to_vec()
    }
}
