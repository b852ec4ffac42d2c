package blob

const (
	fxDir  = "../../../shared/fixtures/nydus/"
	fxBE7D = fxDir + "blobs/be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
	fxTOC  = fxDir + "toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
	fxZran = fxDir + "zran/233c72f2b6b698c07021c4da367cfe2dff4f049efbaa885ca0ff760ea297865a.blob.meta"
)
