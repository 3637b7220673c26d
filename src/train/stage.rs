//! What both stages share: starting or resuming a stage from its checkpoint, the step plan
//! (gradient accumulation), the non-finite check, logging and checkpointing after each forward
//! pass, and the stage report at the end.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, ModuleOptimizer};

use crate::model::discriminator::Discriminator;

use super::TrainOptions;
use super::checkpoint::*;
use super::data::*;
use crate::model::artefact::StageReport;

/// What both stages share: the network being trained with its optimiser and gradient
/// accumulator, the optional discriminator with its own, the step counters, and the checkpoint
/// they resume from and are saved to.
pub(crate) struct StageRun<M: Module> {
    pub(crate) name: &'static str,
    pub(crate) ckpt: Checkpoint,
    pub(crate) model: M,
    pub(crate) optim: ModuleOptimizer,
    pub(crate) accumulator: GradientsAccumulator<M>,
    pub(crate) disc: Option<Discriminator>,
    pub(crate) disc_optim: ModuleOptimizer,
    pub(crate) disc_accumulator: GradientsAccumulator<Discriminator>,
    pub(crate) step: usize,
    pub(crate) optimizer_steps: usize,
    pub(crate) resumed_from: Option<usize>,
    progress: Option<StageProgress>,
}

/// A stage's progress: each forward pass reported to the caller's [`TrainOptions::progress`]
/// (the pipeline draws a bar with it on a terminal), and a log line at the end of every epoch and
/// at least every [`LOG_INTERVAL`] otherwise, with the pace and an ETA (batch jobs have only the
/// log).
struct StageProgress {
    started: Instant,
    first_step: usize,
    last_log: Instant,
}

/// The longest a training stage stays silent in the log.
const LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl StageProgress {
    /// "eta 3m 20s" from the pace of this process's steps so far.
    fn eta(&self, step: usize, total: usize) -> String {
        let done = step.saturating_sub(self.first_step);
        if done == 0 || step >= total {
            return String::new();
        }
        let per_step = self.started.elapsed().as_secs_f64() / done as f64;
        let left =
            std::time::Duration::from_secs((per_step * (total - step) as f64).round() as u64);
        format!(
            ", {:.1} s per step, eta {}",
            per_step,
            humantime::format_duration(left)
        )
    }
}

/// How a stage steps its optimisers.
pub(crate) struct StepPlan {
    pub(crate) learning_rate: f64,
    pub(crate) discriminator_learning_rate: f64,
    pub(crate) accumulation_steps: usize,
    pub(crate) total: usize,
    pub(crate) per_epoch: usize,
}

impl<M: Module + 'static> StageRun<M> {
    /// New networks, or those of the stage's checkpoint when it has one.
    pub(crate) fn start(
        name: &'static str,
        ckpt: Checkpoint,
        model: M,
        optim: ModuleOptimizer,
        disc: Option<Discriminator>,
        disc_optim: ModuleOptimizer,
    ) -> Result<Self, TrainingError> {
        let mut run = StageRun {
            name,
            model,
            optim,
            accumulator: GradientsAccumulator::new(),
            disc,
            disc_optim,
            disc_accumulator: GradientsAccumulator::new(),
            step: 0,
            optimizer_steps: 0,
            resumed_from: None,
            progress: None,
            ckpt,
        };
        if let Some(state) = run.ckpt.state()? {
            run.model = run.ckpt.load_module("model", run.model)?;
            run.optim = run.ckpt.load_optimizer("optimizer", run.optim)?;
            if let Some(d) = run.disc.take() {
                run.disc = Some(run.ckpt.load_module("discriminator", d)?);
                run.disc_optim = run
                    .ckpt
                    .load_optimizer("discriminator_optimizer", run.disc_optim)?;
            }
            tracing::info!(
                "{name}: resuming after step {} from {}",
                state.step,
                run.ckpt.dir.display()
            );
            (run.step, run.optimizer_steps, run.resumed_from) =
                (state.step, state.optimizer_steps, Some(state.step));
        }
        Ok(run)
    }

    /// Ends a forward pass whose gradients are accumulated: records its curve row (`values`
    /// after step and epoch), steps the optimisers every `accumulation_steps` passes and at the
    /// last, checkpoints when due or asked to stop, and stops with
    /// [`TrainingError::Interrupted`] when asked.
    pub(crate) fn end_forward(
        mut self,
        plan: &StepPlan,
        options: &TrainOptions,
        curve: &mut Curve,
        epoch: usize,
        losses: &impl LossRow,
    ) -> Result<Self, TrainingError> {
        self.step += 1;
        let mut row = vec![self.step as f64, epoch as f64];
        row.extend(losses.values());
        curve.push(row);
        let step = self.step;
        let name = self.name;
        let progress = self.progress.get_or_insert_with(|| StageProgress {
            started: Instant::now(),
            first_step: step - 1,
            last_log: Instant::now(),
        });
        if let Some(report) = &options.progress {
            report.report(name, step, plan.total, &losses.summary());
        }
        if step.is_multiple_of(plan.per_epoch.max(1))
            || step == plan.total
            || progress.last_log.elapsed() >= LOG_INTERVAL
        {
            tracing::info!(
                "{name}: step {step}/{} (epoch {}), {}{}",
                plan.total,
                epoch + 1,
                losses.summary(),
                progress.eta(step, plan.total)
            );
            progress.last_log = Instant::now();
        }
        if step.is_multiple_of(plan.accumulation_steps) || step == plan.total {
            self.model = self
                .optim
                .step(plan.learning_rate, self.model, self.accumulator.grads());
            if let Some(d) = self.disc.take() {
                self.disc = Some(self.disc_optim.step(
                    plan.discriminator_learning_rate,
                    d,
                    self.disc_accumulator.grads(),
                ));
            }
            self.optimizer_steps += 1;
            let stop = options.stopped();
            if self
                .optimizer_steps
                .is_multiple_of(options.checkpoint_every.max(1))
                || step == plan.total
                || stop
            {
                let _writing = options.slot.as_ref().map(|s| s.writing());
                self.checkpoint_now()(curve.clone())?;
            }
            if let Some(slot) = &options.slot {
                let write = self.checkpoint_now();
                let curve = curve.clone();
                slot.offer(Box::new(move || write(curve)));
            }
            if stop && step < plan.total {
                return Err(TrainingError::Interrupted {
                    stage: self.name,
                    step,
                });
            }
        }
        Ok(self)
    }

    /// What writes this run's checkpoint at its current step (with a curve): clones of the
    /// networks and optimisers (their tensors are shared, not copied), so that it can be written
    /// later, from another thread, as it is now.
    fn checkpoint_now(
        &self,
    ) -> impl FnOnce(Curve) -> Result<usize, TrainingError> + Send + 'static {
        let (ckpt, step, optimizer_steps) = (self.ckpt.clone(), self.step, self.optimizer_steps);
        let (model, optim) = (self.model.clone(), self.optim.clone());
        let disc = self.disc.clone().map(|d| (d, self.disc_optim.clone()));
        move |curve: Curve| {
            let mut modules = vec![("model", model.into_record())];
            let mut optimizers = vec![("optimizer", &optim)];
            if let Some((d, d_optim)) = &disc {
                modules.push(("discriminator", d.clone().into_record()));
                optimizers.push(("discriminator_optimizer", d_optim));
            }
            ckpt.save(step, optimizer_steps, modules, optimizers)?;
            curve.save()?;
            Ok(step)
        }
    }

    /// Saves the curve and sums the stage up.
    pub(crate) fn finish(
        &self,
        plan: &StepPlan,
        curve: &Curve,
        started: Instant,
    ) -> Result<StageReport, TrainingError> {
        curve.save()?;
        let (first_loss, last_loss) = curve.first_last();
        Ok(StageReport {
            steps: self.step,
            optimizer_steps: self.optimizer_steps,
            epochs: self.step as f64 / plan.per_epoch as f64,
            resumed_from: self.resumed_from,
            first_loss,
            last_loss,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// One forward pass's losses as a stage's loss curve records them: one struct per stage, so the
/// values and the curve's columns cannot drift apart.
pub(crate) trait LossRow {
    /// The curve's columns after `step` and `epoch`, in [`LossRow::values`] order.
    const COLUMNS: &'static [&'static str];

    /// The loss that is minimised.
    fn total(&self) -> f64;

    /// The values, in [`LossRow::COLUMNS`] order.
    fn values(&self) -> Vec<f64>;

    /// The figures the progress log shows.
    fn summary(&self) -> String;

    /// The curve's columns, `step` and `epoch` first.
    fn columns() -> Vec<&'static str> {
        let mut c = vec!["step", "epoch"];
        c.extend_from_slice(Self::COLUMNS);
        c
    }

    /// Fails when the loss is not finite, naming the batch's images.
    fn check_finite<'a>(
        &self,
        stage: &str,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<(), TrainingError> {
        if self.total().is_finite() {
            return Ok(());
        }
        Err(TrainingError::Data {
            id: ids.collect::<Vec<_>>().join(", "),
            message: format!("the {stage} loss became non-finite; lower the learning rate"),
        })
    }
}
