//! `biglearn sparfa …`: offline tools of the SPARFA model.

use std::path::PathBuf;

use anyhow::Context;
use biglearn_sparfa::eval::{format_table, run_eval, EvalOptions, ModelKind};
use clap::{Args, Subcommand};

/// `biglearn sparfa …`
#[derive(Subcommand, Debug)]
pub enum SparfaCommand {
    /// Fit and score models on a response matrix (CSV `student_id,item_id,correct`);
    /// prints one JSON line per model, a table on standard error.
    Eval(EvalArgs),
}

/// Options of `biglearn sparfa eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Training responses, CSV `student_id,item_id,correct` (split 70/10/20 without --test).
    #[arg(long)]
    responses: PathBuf,
    /// Concept tags, CSV `item_id,tag` (hints for the `tagged` model).
    #[arg(long)]
    tags: Option<PathBuf>,
    /// A separate test set in the --responses format; then all of --responses trains.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Write `student_id,item_id,p_correct` of every test row here.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Free concepts when no tags are given.
    #[arg(long)]
    concepts: Option<usize>,
    /// Models to compare, comma-separated: item-mean, rasch, 2pl, tagged, free, …
    #[arg(long, value_delimiter = ',')]
    models: Vec<ModelKind>,
    /// Seed of the split.
    #[arg(long, default_value = "42")]
    seed: String,
    /// Score test learners with the fit's own knowledge (training responses only) instead
    /// of re-scoring them from their training and validation responses.
    #[arg(long)]
    no_rescore: bool,
}

/// Runs a `sparfa` subcommand.
pub fn run_sparfa(command: SparfaCommand) -> anyhow::Result<()> {
    match command {
        SparfaCommand::Eval(args) => {
            let options = EvalOptions {
                responses: args.responses,
                tags: args.tags,
                test: args.test,
                predictions: args.predictions,
                concepts: args.concepts,
                models: args.models,
                seed: args.seed,
                rescore: !args.no_rescore,
            };
            let reports = run_eval(&options).context("the evaluation failed")?;
            eprintln!("{}", format_table(&reports));
            for report in &reports {
                println!("{}", serde_json::to_string(report)?);
            }
            Ok(())
        }
    }
}
