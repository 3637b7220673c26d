// hcld participant level for one subject (nf-core module layout).
// Input:  tuple val(meta), path(bids_dir), path(group_dir)
//         meta.id is the participant label; group_dir is the OUTPUT_DIR the group fit wrote
//         (models/, dataset_description.json), staged so each task writes its own copy.
// Output: tuple val(meta), path("out") holding that subject's derivatives; versions.yml.
process HCLD_PARTICIPANT {
    tag "sub-${meta.id}"
    label 'process_medium'
    container 'ghcr.io/hcld-dev/hcld:0.1.0'

    input:
    tuple val(meta), path(bids_dir, stageAs: 'bids'), path(group_dir, stageAs: 'group')

    output:
    tuple val(meta), path("out"), emit: derivatives
    path "versions.yml"         , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    mkdir -p out
    cp -R group/. out/
    hcld bids out participant \\
        --participant-label ${meta.id} \\
        -w work-hcld \\
        --nprocs ${task.cpus} \\
        ${args}
    rm -rf out/models

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hcld: \$(hcld --version | sed 's/^hcld //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p out/sub-${meta.id}/anat
    touch out/sub-${meta.id}/anat/sub-${meta.id}_desc-harmonized_T1w.nii.gz
    touch out/sub-${meta.id}/anat/sub-${meta.id}_desc-harmonized_T1w.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hcld: 0.1.0
    END_VERSIONS
    """
}
