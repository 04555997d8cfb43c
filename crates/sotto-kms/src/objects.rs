//! Object storage for the second environment (escrowed secrets) and the
//! third (the KMS's sealed bundle), through `object_store`: a local
//! directory, or an S3-compatible bucket written `s3://BUCKET/PREFIX` and
//! configured by the standard `AWS_*` environment variables (endpoint,
//! region, credentials, `AWS_ALLOW_HTTP`). Local writes go to a temporary
//! name and are renamed into place; an S3 PUT is atomic.

use std::fmt;
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::KmsError;

/// A configured object location.
#[derive(Clone)]
pub struct ObjectLocation {
    text: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

impl fmt::Display for ObjectLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ObjectLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectLocation({})", self.text)
    }
}

impl ObjectLocation {
    /// Opens `s3://BUCKET[/PREFIX]` or an existing local directory. A local
    /// directory that does not exist is refused, never created: a mistyped
    /// path or an unmounted volume must not become an empty store.
    pub fn parse(text: &str) -> Result<Self, KmsError> {
        Self::open(text, false)
    }

    /// Like [`ObjectLocation::parse`], but creates a local directory that
    /// does not exist yet: for a location being set up (`kms init
    /// --backup`, `secrets init --store`).
    pub fn create(text: &str) -> Result<Self, KmsError> {
        Self::open(text, true)
    }

    fn open(text: &str, create: bool) -> Result<Self, KmsError> {
        let fail = |reason: String| KmsError::Store {
            location: text.to_owned(),
            reason,
        };
        if let Some(rest) = text.strip_prefix("s3://") {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(fail("no bucket name (expected s3://BUCKET/PREFIX)".into()));
            }
            let store = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| fail(format!("{e} (configure with AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")))?;
            return Ok(Self {
                text: text.to_owned(),
                store: Arc::new(store),
                prefix: ObjectPath::from(prefix.trim_matches('/')),
            });
        }
        if text.contains("://") {
            return Err(fail(
                "unsupported scheme; use a local directory or s3://BUCKET/PREFIX".into(),
            ));
        }
        if create {
            std::fs::create_dir_all(text).map_err(|e| fail(format!("create directory: {e}")))?;
        } else if !std::path::Path::new(text).is_dir() {
            return Err(fail(
                "no such directory (mistyped, or a volume not mounted?); nothing was created"
                    .into(),
            ));
        }
        let store = LocalFileSystem::new_with_prefix(text).map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            text: text.to_owned(),
            store: Arc::new(store),
            prefix: ObjectPath::default(),
        })
    }

    fn path(&self, name: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in name.split('/') {
            path = path.join(part);
        }
        path
    }

    fn fail(&self, name: &str, e: impl fmt::Display) -> KmsError {
        KmsError::Store {
            location: self.text.clone(),
            reason: format!("{name}: {e}"),
        }
    }

    /// Writes an object whole (atomic: temporary name and rename locally,
    /// a single PUT on S3).
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), KmsError> {
        self.store
            .put(&self.path(name), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.fail(name, e))
    }

    /// Writes an object that must not exist yet (conditional put: a hard
    /// link from the temporary name locally, If-None-Match on S3); returns
    /// `false`, writing nothing, if one already exists.
    pub async fn put_new(&self, name: &str, bytes: Vec<u8>) -> Result<bool, KmsError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path(name), PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.fail(name, e)),
        }
    }

    /// Reads an object, or `None` if there is none of that name.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, KmsError> {
        match self.store.get(&self.path(name)).await {
            Ok(found) => {
                let bytes = found.bytes().await.map_err(|e| self.fail(name, e))?;
                Ok(Some(bytes.to_vec()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(name, e)),
        }
    }

    /// Names of the objects under `dir`, relative to this location, sorted.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, KmsError> {
        let base = self.path(dir);
        let mut stream = self.store.list(Some(&base));
        let mut names = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| self.fail(dir, e))?;
            let full = meta.location.as_ref();
            let relative = full
                .strip_prefix(self.prefix.as_ref())
                .unwrap_or(full)
                .trim_start_matches('/');
            names.push(relative.to_owned());
        }
        names.sort();
        Ok(names)
    }
}
