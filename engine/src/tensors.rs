//! Named f32 tensors as a model file yields them, handed to model constructors that take
//! each by name and expected shape.
//!
//! Loaders (ONNX, safetensors) fill a [`Tensors`]; models [`Tensors::take`] what they need,
//! so a missing or mis-shaped tensor is an error naming the tensor and the file, found at
//! load time rather than as a wrong sound later.
//!
//! ```
//! use spiral_engine::tensors::{Tensor, Tensors};
//!
//! let mut t = Tensors::new("voice.onnx");
//! t.insert("proj.bias", Tensor::new(vec![2], vec![0.5, -0.5])?)?;
//! assert_eq!(t.take("proj.bias", &[2])?, vec![0.5, -0.5]);
//! assert!(t.take("proj.weight", &[2, 3]).unwrap_err().to_string().contains("proj.weight"));
//! # Ok::<(), spiral_engine::tensors::TensorError>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A dense row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// Checks that `data` holds exactly the elements `shape` describes.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, TensorError> {
        let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if elements != Some(data.len()) {
            return Err(TensorError::Inconsistent { shape, elements: data.len() });
        }
        Ok(Tensor { shape, data })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
}

/// What can go wrong between a model file's tensors and the model that wants them.
#[derive(Debug, Error)]
pub enum TensorError {
    #[error("a tensor of shape {shape:?} cannot hold {elements} elements")]
    Inconsistent { shape: Vec<usize>, elements: usize },
    #[error("{file}: tensor {name:?} appears twice; the file is damaged, download it again")]
    Duplicate { name: String, file: PathBuf },
    #[error("{file}: tensor {name:?} is missing; is this the right kind of model file? (download it again if it is)")]
    Missing { name: String, file: PathBuf },
    #[error("{file}: tensor {name:?} has shape {got:?} where this model needs {want} dimensions; the file is for a different model")]
    Rank { name: String, want: usize, got: Vec<usize>, file: PathBuf },
    #[error("{file}: tensor {name:?} has shape {got:?} where this model needs {want:?}; the file is for a different model configuration")]
    Shape { name: String, want: Vec<usize>, got: Vec<usize>, file: PathBuf },
}

/// The tensors of one model file, by name.
#[derive(Debug, Default)]
pub struct Tensors {
    by_name: HashMap<String, Tensor>,
    file: PathBuf,
}

impl Tensors {
    /// An empty set; `file` is named in every error.
    pub fn new(file: impl Into<PathBuf>) -> Tensors {
        Tensors { by_name: HashMap::new(), file: file.into() }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Result<(), TensorError> {
        let name = name.into();
        if self.by_name.contains_key(&name) {
            return Err(TensorError::Duplicate { name, file: self.file.clone() });
        }
        self.by_name.insert(name, tensor);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<&Tensor, TensorError> {
        self.by_name.get(name).ok_or_else(|| TensorError::Missing { name: name.into(), file: self.file.clone() })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every tensor's name, shape and values, to change in place (in no particular order).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &[usize], &mut [f32])> {
        self.by_name.iter_mut().map(|(name, t)| (name.as_str(), t.shape.as_slice(), t.data.as_mut_slice()))
    }

    /// Removes the tensor and returns its data, if its shape is exactly `shape`.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, TensorError> {
        let got = self.get(name)?.shape();
        if got != shape {
            return Err(TensorError::Shape {
                name: name.into(),
                want: shape.to_vec(),
                got: got.to_vec(),
                file: self.file.clone(),
            });
        }
        Ok(self.by_name.remove(name).map(Tensor::into_data).unwrap_or_default())
    }

    /// Names still held, sorted (what a model did not take).
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked_and_errors_name_tensor_and_file() {
        assert!(Tensor::new(vec![2, 3], vec![0.0; 5]).is_err());
        assert!(Tensor::new(vec![usize::MAX, 3], vec![]).is_err());
        let mut t = Tensors::new("/x/v.onnx");
        t.insert("a", Tensor::new(vec![2, 3], vec![1.0; 6]).unwrap()).unwrap();
        let dup = t.insert("a", Tensor::new(vec![1], vec![0.0]).unwrap()).unwrap_err().to_string();
        assert!(dup.contains("/x/v.onnx") && dup.contains("\"a\" appears twice"), "{dup}");
        let wrong = t.take("a", &[3, 2]).unwrap_err().to_string();
        assert!(wrong.contains("[2, 3]") && wrong.contains("[3, 2]") && wrong.contains("/x/v.onnx"), "{wrong}");
        assert_eq!(t.take("a", &[2, 3]).unwrap(), vec![1.0; 6]);
        assert!(t.is_empty());
        assert!(t.take("a", &[2, 3]).unwrap_err().to_string().contains("missing"));
    }
}
