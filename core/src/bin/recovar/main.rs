//! `recovar`: the command line of RECOVAR, rebuilt in Rust.
//!
//! Each subcommand lives in its own module: arguments, then one call into `recovar_core`,
//! then files. Subcommand names follow the Python tool (`parse_pose_star`, ...); the dashed
//! spellings (`parse-pose-star`) are accepted too.

mod analyze;
mod common;
mod compute_state;
mod compute_trajectory;
mod downsample;
mod estimate_conformational_density;
mod extract_image_subset;
mod extract_image_subset_from_kmeans;
mod generate_from_embedding;
mod info;
mod kernel_args;
mod make_test_dataset;
mod parse_ctf_csparc;
mod parse_ctf_star;
mod parse_pose_csparc;
mod parse_pose_star;
mod pipeline;
mod run_test_dataset;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "recovar",
    version,
    about = "RECOVAR: regularized covariance estimation and kernel-regression volumes for cryo-EM heterogeneity",
    propagate_version = true
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse image poses from a RELION .star file into a cryoDRGN poses.pkl
    #[command(name = "parse_pose_star", alias = "parse-pose-star")]
    ParsePoseStar(parse_pose_star::Args),
    /// Parse image poses from a cryoSPARC .cs file into a cryoDRGN poses.pkl
    #[command(name = "parse_pose_csparc", alias = "parse-pose-csparc")]
    ParsePoseCsparc(parse_pose_csparc::Args),
    /// Parse CTF parameters from a RELION .star file into a cryoDRGN ctf.pkl
    #[command(name = "parse_ctf_star", alias = "parse-ctf-star")]
    ParseCtfStar(parse_ctf_star::Args),
    /// Parse CTF parameters from a cryoSPARC .cs file into a cryoDRGN ctf.pkl
    #[command(name = "parse_ctf_csparc", alias = "parse-ctf-csparc")]
    ParseCtfCsparc(parse_ctf_csparc::Args),
    /// Downsample an image stack or volume by Fourier cropping
    Downsample(downsample::Args),
    /// Describe a dataset (particles + poses + CTF) and check that its parts agree
    Info(info::Args),
    /// Run the RECOVAR pipeline: mean, masks, noise, covariance, principal components, embeddings
    Pipeline(pipeline::Args),
    /// Simulate a heterogeneous dataset with known ground truth
    #[command(name = "make_test_dataset", alias = "make-test-dataset")]
    MakeTestDataset(make_test_dataset::Args),
    /// k-means on an embedding, volumes at the centers, trajectories, and figures
    Analyze(analyze::Args),
    /// Generate volumes at latent points by kernel regression, from a pipeline run
    #[command(name = "compute_state", alias = "compute-state")]
    ComputeState(compute_state::Args),
    /// Generate volumes by kernel regression from an embedding made by another method (e.g. cryoDRGN z.pkl)
    #[command(name = "generate_from_embedding", alias = "generate-from-embedding")]
    GenerateFromEmbedding(generate_from_embedding::Args),
    /// Conformational density of an embedding by deconvolution, with the L-curve choice of regularization
    #[command(
        name = "estimate_conformational_density",
        alias = "estimate-conformational-density"
    )]
    EstimateConformationalDensity(estimate_conformational_density::Args),
    /// A low-free-energy path between two latent points, with volumes along it
    #[command(name = "compute_trajectory", alias = "compute-trajectory")]
    ComputeTrajectory(compute_trajectory::Args),
    /// Check the install: simulate a small dataset, run every step on it, and compare with the ground truth
    #[command(name = "run_test_dataset", alias = "run-test-dataset")]
    RunTestDataset(run_test_dataset::Args),
    /// Indices of the images behind one region of a generated volume (and optionally the
    /// .star/.cs subset)
    #[command(name = "extract_image_subset", alias = "extract-image-subset")]
    ExtractImageSubset(extract_image_subset::Args),
    /// Indices of the images in some k-means clusters (and optionally the .star/.cs subset)
    #[command(
        name = "extract_image_subset_from_kmeans",
        alias = "extract-image-subset-from-kmeans"
    )]
    ExtractImageSubsetFromKmeans(extract_image_subset_from_kmeans::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Commands that write an output folder also log to its run.log.
    let log_file = match &cli.command {
        Command::Pipeline(a) => Some(a.outdir.join("run.log")),
        Command::ComputeState(a) => Some(a.outdir.join("run.log")),
        Command::Analyze(a) => Some(a.log_dir().join("run.log")),
        Command::GenerateFromEmbedding(a) => Some(a.outdir.join("run.log")),
        Command::EstimateConformationalDensity(a) => Some(a.log_dir().join("run.log")),
        Command::ComputeTrajectory(a) => Some(a.outdir.join("run.log")),
        _ => None,
    };
    if let Err(e) = common::init_logging(cli.verbose, log_file.as_deref()) {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::ParsePoseStar(a) => parse_pose_star::run(a),
        Command::ParsePoseCsparc(a) => parse_pose_csparc::run(a),
        Command::ParseCtfStar(a) => parse_ctf_star::run(a),
        Command::ParseCtfCsparc(a) => parse_ctf_csparc::run(a),
        Command::Downsample(a) => downsample::run(a),
        Command::Info(a) => info::run(a),
        Command::Pipeline(a) => pipeline::run(a),
        Command::MakeTestDataset(a) => make_test_dataset::run(a),
        Command::ComputeState(a) => compute_state::run(a),
        Command::Analyze(a) => analyze::run(a),
        Command::GenerateFromEmbedding(a) => generate_from_embedding::run(a),
        Command::EstimateConformationalDensity(a) => estimate_conformational_density::run(a),
        Command::ComputeTrajectory(a) => compute_trajectory::run(a),
        Command::RunTestDataset(a) => run_test_dataset::run(a),
        Command::ExtractImageSubset(a) => extract_image_subset::run(a),
        Command::ExtractImageSubsetFromKmeans(a) => extract_image_subset_from_kmeans::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
