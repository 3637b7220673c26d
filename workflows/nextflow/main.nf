#!/usr/bin/env nextflow
// hcld as a Nextflow DSL2 pipeline: group fit -> one participant task per subject -> group report.
//   nextflow run workflows/nextflow/main.nf -profile docker --bids_dir /data/bids --outdir /data/out
//   nextflow run workflows/nextflow/main.nf -profile apptainer --bids_dir ... --outdir ...
//   nextflow run workflows/nextflow/main.nf -stub -profile test --bids_dir examples/multisite --outdir /tmp/nf
// Options for hcld go in --hcld_args (both levels), e.g. --hcld_args '--method all' (a single option
// needs `=`: --hcld_args='--verbose', or Nextflow reads it as a flag).
nextflow.enable.dsl = 2

include { HCLD_GROUP as HCLD_GROUP_FIT    } from './modules/local/hcld/group/main'
include { HCLD_PARTICIPANT                } from './modules/local/hcld/participant/main'
include { HCLD_GROUP as HCLD_GROUP_REPORT } from './modules/local/hcld/group/main'

params.bids_dir          = null
params.outdir            = 'results'
params.participant_label = null   // comma-separated labels; default: every sub-* folder
params.hcld_args         = ''

workflow {
    if (!params.bids_dir) {
        error "pass --bids_dir (a BIDS dataset)"
    }
    def bids = file(params.bids_dir, checkIfExists: true)
    // Nextflow reads `--participant_label 01` as the number 1, so numeric labels also match by value
    // (`sub-01` always matches exactly).
    def wanted = params.participant_label ? params.participant_label.toString().tokenize(', ').collect { it.replaceFirst(/^sub-/, '') } : null
    def matches = { String label, String w -> label == w || (label.isInteger() && w.isInteger() && label.toInteger() == w.toInteger()) }
    def found = files("${params.bids_dir}/sub-*", type: 'dir').collect { it.name.replaceFirst(/^sub-/, '') }
    def unknown = wanted ? wanted.findAll { w -> !found.any { matches(it, w) } } : []
    if (unknown) {
        error "--participant_label ${unknown.join(',')}: no such sub-* folder in ${params.bids_dir} (found: ${found.sort().join(', ')})"
    }

    // Subjects from the BIDS layout.
    subjects = Channel
        .fromList(found.sort())
        .filter { label -> wanted == null || wanted.any { w -> matches(label, w) } }
        .map { label -> [id: label] }

    HCLD_GROUP_FIT(Channel.of([[id: 'fit'], bids, []]))

    HCLD_PARTICIPANT(
        subjects.combine(HCLD_GROUP_FIT.out.out.map { meta, out -> out })
            .map { meta, out -> [meta, bids, out] }
    )

    HCLD_GROUP_REPORT(
        HCLD_PARTICIPANT.out.derivatives
            .map { meta, out -> out }
            .mix(HCLD_GROUP_FIT.out.out.map { meta, out -> out })
            .collect(sort: true)   // a fixed order keeps the task hash stable for -resume
            .map { outs -> [[id: 'report'], bids, outs] }
    )

    HCLD_GROUP_FIT.out.versions
        .mix(HCLD_PARTICIPANT.out.versions, HCLD_GROUP_REPORT.out.versions)
        .unique { f -> f.text }   // one entry per process, not per task
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info")
}
