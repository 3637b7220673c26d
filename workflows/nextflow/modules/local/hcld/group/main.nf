// hcld group level (nf-core module layout): fit (preprocess every subject, train HCLD, fit Nyúl)
// when `derivatives` is empty, or the report over every subject's derivatives otherwise.
// Input:  tuple val(meta), path(bids_dir), path(derivatives)  (meta.id names the run)
// Output: tuple val(meta), path("out"): OUTPUT_DIR (models/, group.html, ...); versions.yml.
process HCLD_GROUP {
    tag "${meta.id}"
    label 'process_high'
    container 'ghcr.io/hcld-dev/hcld:0.1.0'

    input:
    tuple val(meta), path(bids_dir, stageAs: 'bids'), path(derivatives, stageAs: 'derivatives/d??')

    output:
    tuple val(meta), path("out"), emit: out
    path "versions.yml"         , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    mkdir -p out
    for d in derivatives/*/; do
        [ -d "\$d" ] && cp -R "\$d". out/
    done
    hcld bids out group -w work-hcld --nprocs ${task.cpus} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hcld: \$(hcld --version | sed 's/^hcld //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p out/models
    touch out/dataset_description.json out/group.html

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hcld: 0.1.0
    END_VERSIONS
    """
}
