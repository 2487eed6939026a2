//! Data-parallel training on burn-collective: one replica of the model per device, each
//! encoding its slice of the global batch, the embeddings gathered so that every replica
//! computes the loss over the whole global batch, and the gradients summed across replicas.
//!
//! The gather is OpenCLIP's default (`gather_with_grad=False`, `local_loss=False`): each replica
//! receives every replica's embeddings as constants, puts its own slice back with its gradient,
//! and computes the full `[global, global]` loss. Its backward then gives the exact gradient of
//! the global loss with respect to its own slice's embeddings, so the sum of the replicas'
//! encoder gradients is the gradient of one device training the whole batch, with no gradient
//! sent through the gather (burn-collective's all-reduce has no backward pass). The parameters
//! that enter the loss directly (the two temperatures) get the full gradient on every replica,
//! the same on each, so after the sum they are divided by the number of replicas. OpenCLIP
//! averages instead, which scales the encoders' gradients by 1/world; summing keeps a run on N
//! devices equal, step for step, to one device with N times the batch (`tests/parallel.rs`).
//!
//! burn-collective 0.21 has all-reduce, reduce and broadcast but no all-gather, and across
//! machines only all-reduce. A gather is therefore an all-reduce (sum) of a zero tensor of the
//! global batch's shape into which each replica has written its own rows: adding zeros is exact.
//! Its calls block until every replica has made them and have no timeout, so each one runs under
//! a watchdog that stops the process, naming the rank, when a call waits longer than the job's
//! timeout or when another replica has failed.
//!
//! Across machines, burn-collective's orchestrator (`vlp coordinator`) introduces the machines
//! to each other and its ring all-reduce runs between them, after each machine has reduced among
//! its own devices. The published crates could not complete a second all-reduce between machines;
//! the vendored ones can (`vendor/README.md`). Each machine reads its own part of the data
//! ([`Rank::data_part`]: its shards, or every N-th sample) and makes batches of its share of the
//! global batch ([`Rank::machine_batch`]); since a part may lose a bad image, the replicas' row
//! counts are exchanged each step, with a flag that ends the epoch on every machine at the step
//! at which the first part runs out ([`Rank::layout`]).

use crate::{Result, TrainError};
use burn::collective::{self, CollectiveConfig, PeerId, ReduceOperation};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};
use burn_communication::Address;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use vlp_model::{BatchFeatures, DualEncoder, TokenFeatures};

/// How long a collective call may wait for the other replicas by default: long enough for
/// rank 0 to validate and write a checkpoint while the others wait at the next step.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// burn-collective keeps one group per backend type in a process (tracel-ai/burn#3449), so two
/// data-parallel jobs in one process (tests) take turns.
static ONE_GROUP: Mutex<()> = Mutex::new(());

/// Holds the process's one collective group for a job.
pub fn group_lock() -> MutexGuard<'static, ()> {
    ONE_GROUP.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forgets a group whose job failed, so that the next job in this process can form its own.
pub fn reset<B: Backend>() {
    collective::reset_collective::<B>();
}

/// Rows `[start, end)` of a batch of `n` pairs that part `rank` of `world` takes: contiguous, in
/// rank order, sizes differing by at most one (a batch that lost a sample to a bad image is still
/// split).
pub fn slice_of(n: usize, rank: usize, world: usize) -> Range<usize> {
    (rank * n / world)..((rank + 1) * n / world)
}

/// Where each replica's rows lie in a global batch: replica `r` holds `rows(r)`, in rank order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `world + 1` row offsets.
    starts: Vec<usize>,
}

impl Layout {
    /// A batch of `n` split by [`slice_of`].
    pub fn even(n: usize, world: usize) -> Self {
        Self::from_counts((0..world).map(|r| slice_of(n, r, world).len()))
    }

    fn from_counts(counts: impl IntoIterator<Item = usize>) -> Self {
        let mut starts = vec![0];
        for c in counts {
            starts.push(starts.last().expect("starts at 0") + c);
        }
        Layout { starts }
    }

    pub fn rows(&self, rank: usize) -> Range<usize> {
        self.starts[rank]..self.starts[rank + 1]
    }

    /// Rows in the global batch.
    pub fn total(&self) -> usize {
        *self.starts.last().expect("at least one replica")
    }
}

/// Watches the replicas of this process: which collective call each is in and since when, and
/// whether one has failed.
struct Watchdog {
    /// Per replica of this process.
    waiting: Mutex<Vec<Option<(Instant, &'static str)>>>,
    /// The job rank of this process's first replica.
    first: usize,
    failed: Mutex<Option<(usize, String)>>,
    timeout: Duration,
}

impl Watchdog {
    fn start(local: usize, first: usize, timeout: Duration) -> Arc<Self> {
        let dog = Arc::new(Watchdog { waiting: Mutex::new(vec![None; local]), first, failed: Mutex::new(None), timeout });
        let weak = Arc::downgrade(&dog);
        std::thread::Builder::new()
            .name("vlp-collective-watchdog".into())
            .spawn(move || {
                while let Some(dog) = weak.upgrade() {
                    dog.check();
                    drop(dog);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
            .expect("spawn the watchdog thread");
        dog
    }

    /// Stops the process when a replica is stuck in a call that can no longer complete.
    fn check(&self) {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (slot, w) in waiting.iter().enumerate() {
            let Some((since, what)) = w else { continue };
            let rank = format!("rank {}", self.first + slot);
            let cause = match &failed {
                Some((bad, why)) => format!("rank {bad} failed ({why}), so {rank}'s {what} cannot complete"),
                None if since.elapsed() > self.timeout => {
                    format!("{rank}: {what} waited more than {} s for the other ranks (one has stopped or stalled)", self.timeout.as_secs())
                }
                None => continue,
            };
            eprintln!("error: data-parallel training stopped: {cause}");
            std::process::exit(3);
        }
    }
}

/// This machine's place in a job on several machines ("nodes"), each running `vlp train` with
/// the same devices: burn-collective's orchestrator (`vlp coordinator`) introduces the nodes to
/// each other, then tensors go node to node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub nodes: usize,
    /// 0 for the node whose first replica writes the checkpoints and logs.
    pub rank: usize,
    /// `HOST:PORT` of the orchestrator.
    pub coordinator: String,
    /// `HOST:PORT` at which the other nodes reach this one; it listens on PORT.
    pub address: String,
}

impl NodeSpec {
    fn collective_config(&self, local: usize) -> Result<CollectiveConfig> {
        let bad = |what: &str, v: &str, why: String| TrainError::Other(format!("{what} {v}: {why}"));
        let url = |what: &str, v: &str| {
            v.rsplit_once(':')
                .filter(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                .ok_or_else(|| bad(what, v, "expected HOST:PORT".into()))?;
            format!("ws://{v}").parse::<Address>().map_err(|e| bad(what, v, e))
        };
        if self.rank >= self.nodes {
            return Err(TrainError::Other(format!("--node-rank {} must be below --nodes {}", self.rank, self.nodes)));
        }
        let port: u16 = self.address.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(0);
        Ok(CollectiveConfig::default()
            .with_num_devices(local)
            .with_num_nodes(self.nodes as u32)
            .with_global_address(url("--coordinator", &self.coordinator)?)
            .with_node_address(url("--node-address", &self.address)?)
            .with_data_service_port(port))
    }
}

/// Runs burn-collective's orchestrator on `port` until the process is stopped: the one process
/// every node of a multi-machine job connects to first (`vlp coordinator`).
pub fn run_coordinator(port: u16) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| TrainError::Other(format!("the coordinator's runtime: {e}")))?;
    runtime.block_on(burn_collective::start_global_orchestrator(port));
    Ok(())
}

/// One replica's place in the data-parallel group: its rank, the group's size, and the
/// collective calls it makes. A group of one makes no calls at all.
pub struct Rank {
    /// Rank in the whole job: node-major, `node × devices per node + device`.
    pub index: usize,
    /// Replicas in the whole job.
    pub world: usize,
    /// This replica's slot among the process's.
    local: usize,
    /// Replicas in this process.
    local_count: usize,
    /// Machines in the job.
    nodes: usize,
    config: CollectiveConfig,
    watchdog: Option<Arc<Watchdog>>,
    /// Seconds spent in collective calls since the last [`Rank::take_collective_secs`].
    collective_secs: std::cell::Cell<f64>,
}

/// The ranks of this process's `local` devices, made together: give one to each replica's
/// thread. `node`: this machine's place in a job on several.
pub fn ranks(local: usize, timeout: Duration, node: Option<&NodeSpec>) -> Result<Vec<Rank>> {
    let (config, first, nodes) = match node {
        None => (CollectiveConfig::default().with_num_devices(local), 0, 1),
        Some(n) => (n.collective_config(local)?, n.rank * local, n.nodes),
    };
    let world = local * nodes;
    let watchdog = (world > 1).then(|| Watchdog::start(local, first, timeout));
    Ok((0..local)
        .map(|i| Rank {
            index: first + i,
            world,
            local: i,
            local_count: local,
            nodes,
            config: config.clone(),
            watchdog: watchdog.clone(),
            collective_secs: Default::default(),
        })
        .collect())
}

impl Rank {
    /// The only replica of a job on one device.
    pub fn single() -> Self {
        ranks(1, DEFAULT_TIMEOUT, None).expect("a local group").pop().expect("one rank")
    }

    fn peer(&self) -> PeerId {
        PeerId::from(self.index)
    }

    /// Joins the group (blocks until every replica has): the first collective call of a replica.
    pub fn register<B: Backend>(&self, device: &B::Device) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        self.watched("registration", || collective::register::<B>(self.peer(), device.clone(), self.config.clone()))
    }

    /// Leaves the group.
    pub fn finish<B: Backend>(&self) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        self.watched("leaving the group", || collective::finish_collective::<B>(self.peer()))
    }

    /// Records that this replica failed, so that the others, blocked in a call it will never
    /// make, stop with its cause instead of waiting out the timeout.
    pub fn fail(&self, why: &str) {
        if let Some(dog) = &self.watchdog {
            dog.failed.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert((self.index, why.to_string()));
        }
    }

    /// This machine's part of the training data: each machine of the job reads its own
    /// (`vlp_data::source::Part`), so that every sample is read by one machine once per epoch.
    pub fn data_part(&self) -> vlp_data::source::Part {
        vlp_data::source::Part::new(self.index / self.local_count, self.nodes).expect("a node rank below the nodes")
    }

    /// How many pairs of each global batch of `batch_size` this machine contributes: its
    /// replicas' share (the whole batch on one machine).
    pub fn machine_batch(&self, batch_size: usize) -> usize {
        let first = self.index - self.local;
        (first..first + self.local_count).map(|r| slice_of(batch_size, r, self.world).len()).sum()
    }

    /// For a batch of `held` rows in this process (the global batch on one machine, this
    /// machine's part of it on several), or `None` when this machine's part of the data has
    /// run out: the rows of it that this replica encodes, and where every replica's rows lie in
    /// the global batch. On several machines, whose parts may have lost different numbers of
    /// samples to bad images, the replicas' counts are summed across the job (a small
    /// all-reduce), with a flag for a machine whose part has run out: then it is `Ok(None)` on
    /// every replica of the job at the same step, and the epoch ends there for all.
    /// `B`, `device`: the backend and device the group was registered with.
    pub fn layout<B: Backend>(&self, held: Option<usize>, device: &B::Device) -> Result<Option<(Range<usize>, Layout)>> {
        let layout = match held {
            Some(held) if self.nodes == 1 => Layout::even(held, self.world),
            None if self.nodes == 1 => return Ok(None),
            _ => {
                // one slot per replica, and one that counts the machines whose part has run out
                let mut counts = vec![0f32; self.world + 1];
                match held {
                    Some(held) => counts[self.index] = slice_of(held, self.local, self.local_count).len() as f32,
                    None => counts[self.world] = 1.0,
                }
                let counts = Tensor::<B, 1>::from_floats(counts.as_slice(), device);
                let summed: Vec<f32> = self.sum("exchanging the replicas' row counts", counts)?.into_data().iter::<f32>().collect();
                if summed[self.world] > 0.0 {
                    return Ok(None);
                }
                Layout::from_counts(summed[..self.world].iter().map(|&c| c as usize))
            }
        };
        if let Some(r) = (0..self.world).find(|&r| layout.rows(r).is_empty()) {
            return Err(TrainError::Other(format!(
                "rank {r} has no pair in this step (every image of its part of the batch failed to decode, or the batch is smaller than the job)"
            )));
        }
        // on one machine this is `layout.rows(self.index)`: there the process holds the whole batch
        let own = slice_of(held.expect("a batch held"), self.local, self.local_count);
        Ok(Some((own, layout)))
    }

    /// Tells the job that this machine's part of the data has run out, in the exchange in which
    /// the other replicas lay out their next step ([`Self::layout`] with `None`): the epoch
    /// ends there on every machine.
    pub fn end_of_part<B: Backend>(&self, device: &B::Device) -> Result<()> {
        self.layout::<B>(None, device).map(|_| ())
    }

    /// Time spent in collective calls since the last call of this method.
    pub fn take_collective_secs(&self) -> f64 {
        self.collective_secs.replace(0.0)
    }

    fn watched<T>(&self, what: &'static str, call: impl FnOnce() -> std::result::Result<T, collective::CollectiveError>) -> Result<T> {
        let dog = self.watchdog.as_ref().expect("a group of one makes no collective calls");
        let slot = self.local;
        dog.waiting.lock().unwrap_or_else(|e| e.into_inner())[slot] = Some((Instant::now(), what));
        let started = Instant::now();
        let out = call();
        self.collective_secs.set(self.collective_secs.get() + started.elapsed().as_secs_f64());
        dog.waiting.lock().unwrap_or_else(|e| e.into_inner())[slot] = None;
        out.map_err(|e| TrainError::Other(format!("rank {}: {what} failed: {e:?}", self.index)))
    }

    /// Sums a tensor over the replicas (every replica gets the sum).
    pub fn sum<B: Backend, const D: usize>(&self, what: &'static str, t: Tensor<B, D>) -> Result<Tensor<B, D>> {
        if self.world == 1 {
            return Ok(t);
        }
        let reduced = self.watched(what, || collective::all_reduce::<B>(self.peer(), t.into_primitive().tensor(), ReduceOperation::Sum))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced)))
    }

    /// Every replica's rows of the global batch, in rank order, as constants (`local` is this
    /// replica's rows, `layout.rows(rank)`).
    pub fn gather<B: Backend, const D: usize>(&self, what: &'static str, local: Tensor<B, D>, layout: &Layout) -> Result<Tensor<B, D>> {
        if self.world == 1 {
            return Ok(local);
        }
        let (rows, n) = (layout.rows(self.index), layout.total());
        let mut dims = local.dims();
        assert_eq!(dims[0], rows.len(), "a replica gathers its own slice of the batch");
        dims[0] = n;
        let mut ranges: [Range<usize>; D] = std::array::from_fn(|d| 0..dims[d]);
        ranges[0] = rows;
        let padded = Tensor::<B, D>::zeros(dims, &local.device()).slice_assign(ranges, local);
        self.sum(what, padded)
    }

    /// [`Self::gather`] of a tensor that carries gradients: the other replicas' rows come as
    /// constants and this replica's own rows keep their gradient.
    pub fn gather_with_local_grad<B: AutodiffBackend, const D: usize>(
        &self,
        what: &'static str,
        local: Tensor<B, D>,
        layout: &Layout,
    ) -> Result<Tensor<B, D>> {
        if self.world == 1 {
            return Ok(local);
        }
        let (rows, n) = (layout.rows(self.index), layout.total());
        let all = self.gather(what, local.clone().inner(), layout)?;
        let mut parts = Vec::with_capacity(3);
        if rows.start > 0 {
            parts.push(Tensor::from_inner(all.clone().narrow(0, 0, rows.start)));
        }
        parts.push(local);
        if rows.end < n {
            parts.push(Tensor::from_inner(all.narrow(0, rows.end, n - rows.end)));
        }
        Ok(Tensor::cat(parts, 0))
    }

    /// A replica's encoded slice → the whole global batch, its own rows keeping their gradient.
    pub fn gather_features<B: AutodiffBackend>(&self, local: BatchFeatures<B>, layout: &Layout) -> Result<BatchFeatures<B>> {
        if self.world == 1 {
            return Ok(local);
        }
        let tokens = match local.tokens {
            None => None,
            Some(t) => Some(TokenFeatures {
                image: self.gather_with_local_grad("gathering image tokens", t.image, layout)?,
                text: self.gather_with_local_grad("gathering text tokens", t.text, layout)?,
                text_mask: Tensor::from_inner(self.gather("gathering text masks", t.text_mask.inner(), layout)?),
            }),
        };
        Ok(BatchFeatures {
            image: self.gather_with_local_grad("gathering image embeddings", local.image, layout)?,
            text: self.gather_with_local_grad("gathering text embeddings", local.text, layout)?,
            tokens,
        })
    }

    /// Sums the replicas' gradients, every parameter's in one all-reduce, in the module's own
    /// order (the same on every replica); the temperatures' are divided by the group's size
    /// (see the module's header). `grads` are the optimizer's parameter groups.
    pub fn sum_gradients<B: AutodiffBackend>(&self, model: &DualEncoder<B>, grads: [&mut GradientsParams; 2]) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        let mut flat = Flatten::<B> { grads, parts: Vec::new(), taken: Vec::new() };
        model.visit(&mut flat);
        let Flatten { grads, parts, taken } = flat;
        if parts.is_empty() {
            return Ok(());
        }
        let summed = self.sum("summing gradients", Tensor::cat(parts, 0))?;
        let per_replica = [model.logit_scale.id, model.token_logit_scale.id];
        let mut at = 0;
        for (id, group, shape) in taken {
            let n: usize = shape.iter().product();
            let mut g = summed.clone().narrow(0, at, n);
            at += n;
            if per_replica.contains(&id) {
                g = g.div_scalar(self.world as f32);
            }
            register(grads[group], id, g, &shape);
        }
        Ok(())
    }
}

/// Takes every gradient out of the optimizer's groups, flattened, in visit order.
struct Flatten<'a, B: AutodiffBackend> {
    grads: [&'a mut GradientsParams; 2],
    parts: Vec<Tensor<B::InnerBackend, 1>>,
    /// (parameter, group, shape) of each part.
    taken: Vec<(ParamId, usize, Vec<usize>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        for (group, g) in self.grads.iter_mut().enumerate() {
            if let Some(t) = g.remove::<B::InnerBackend, D>(param.id) {
                let shape = t.dims().to_vec();
                self.parts.push(t.reshape([shape.iter().product::<usize>()]));
                self.taken.push((param.id, group, shape));
            }
        }
    }
}

/// Puts a flattened gradient back with its parameter's rank.
fn register<B: Backend>(grads: &mut GradientsParams, id: ParamId, g: Tensor<B, 1>, shape: &[usize]) {
    macro_rules! back {
        ($($d:literal),*) => {
            match shape.len() {
                $($d => grads.register(id, g.reshape::<$d, _>(<[usize; $d]>::try_from(shape).expect("rank matches"))),)*
                r => panic!("a parameter of rank {r}"),
            }
        };
    }
    back!(1, 2, 3, 4, 5);
}
