//! Password hashing and verification (argon2id) on a few dedicated threads that keep their
//! 19 MiB of argon2 working memory between jobs.
//!
//! Argon2 needs ~20 ms of CPU and 19 MiB of memory per hash. Run on the shared blocking pool,
//! a crowd of first logins allocated and freed that memory on hundreds of threads at once,
//! and the allocator kept what the fragmented heaps could not give back (gigabytes for a few
//! thousand logins). Here one thread per core does the work, each with its memory allocated
//! once, so a login storm queues at a bounded memory cost and never occupies the threads the
//! database needs.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use crate::store::{StoreError, StoreResult};

enum Job {
    Hash { password: String, reply: oneshot::Sender<Result<String, String>> },
    Verify { password: String, phc: String, reply: oneshot::Sender<bool> },
}

/// The password workers; cheap to share.
pub(super) struct PasswordWorkers {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl PasswordWorkers {
    /// Starts one worker per core.
    pub(super) fn start() -> PasswordWorkers {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        for i in 0..n {
            let rx = rx.clone();
            // A worker that cannot start leaves the others; with none, jobs fail clearly.
            let _ = std::thread::Builder::new().name(format!("pushsync-argon2-{i}")).spawn(move || work(&rx));
        }
        PasswordWorkers { jobs: Mutex::new(tx) }
    }

    fn submit(&self, job: Job) -> StoreResult<()> {
        let tx = self.jobs.lock().map_err(|_| StoreError::Internal("password workers poisoned".into()))?;
        tx.send(job).map_err(|_| StoreError::Internal("password workers stopped".into()))
    }

    /// An argon2id PHC string for `password`.
    pub(super) async fn hash(&self, password: String) -> StoreResult<String> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Hash { password, reply })?;
        rx.await
            .map_err(|_| StoreError::Internal("password worker died".into()))?
            .map_err(|e| StoreError::Internal(format!("password hashing failed: {e}")))
    }

    /// Whether `password` matches the PHC string (false for a malformed one).
    pub(super) async fn verify(&self, password: String, phc: String) -> StoreResult<bool> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Verify { password, phc, reply })?;
        rx.await.map_err(|_| StoreError::Internal("password worker died".into()))
    }
}

fn work(rx: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        match job {
            Ok(Job::Hash { password, reply }) => {
                let _ = reply.send(hash(&password, &mut memory));
            }
            Ok(Job::Verify { password, phc, reply }) => {
                let _ = reply.send(verify(&password, &phc, &mut memory));
            }
            Err(_) => return,
        }
    }
}

/// Runs argon2 with `memory`, grown once to what `params` needs.
fn compute(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    Argon2::new(algorithm, version, params).hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
}

fn hash(password: &str, memory: &mut Vec<Block>) -> Result<String, String> {
    let params = Params::default();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf).map_err(|e| e.to_string())?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(Algorithm::Argon2id, Version::V0x13, params.clone(), password.as_bytes(), salt_bytes, &mut out, memory)
        .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

fn verify(password: &str, phc: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) =
        (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed), parsed.salt, parsed.hash)
    else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
        None => Version::default(),
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else { return false };
    let mut out = vec![0u8; expected.len()];
    if compute(algorithm, version, params, password.as_bytes(), salt_bytes, &mut out, memory).is_err() {
        return false;
    }
    // Output compares in constant time.
    Output::new(&out).is_ok_and(|o| o == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    #[tokio::test]
    async fn hashes_verify_here_and_with_the_argon2_crate() {
        let workers = PasswordWorkers::start();
        let phc = workers.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(workers.verify("correct horse".into(), phc.clone()).await.unwrap());
        assert!(!workers.verify("wrong".into(), phc.clone()).await.unwrap());
        assert!(!workers.verify("x".into(), "not a hash".into()).await.unwrap());
        // Interoperable with the crate's own implementation, both ways.
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        use argon2::PasswordHasher;
        let theirs = Argon2::default().hash_password(b"pw", &SaltString::generate(&mut OsRng)).unwrap().to_string();
        assert!(workers.verify("pw".into(), theirs).await.unwrap());
    }
}
